from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from models_registry.choices import (
    AlgorithmEvaluation,
    DatasetSource,
    DataSource,
    Implementation,
    OutputKind,
    Runtime,
    SampleSource,
    ScoreSplit,
    TaskJobStatus,
)
from models_registry.nn.metrics import METRIC_CHOICES


class Task(models.Model):
    """An operation with an input/output contract, a data source, a metric and fixed splits.

    The dataset (inputs, targets and the train/validation/gate/test index arrays) is written
    once, as an NPZ file through the storage API, when the task is created; every version
    of every model is then judged on the same rows: decisions on the gate split, reports on
    the sealed test split (``models_registry.sealed``). ``metric`` is the score every
    evaluation of the task reports (``models_registry.nn.metrics``); ``warnings`` are what the
    task's creation found worth saying (a gate too small to detect small gains, ...).

    ``algorithm_evaluation`` says whether the task's algorithm has been measured on the gate and
    sealed test splits (serving compares neural versions with that sample);
    ``models_registry.task_algorithm`` owns it:

    * created with an algorithm: pending, then evaluated in the creating process → done, or
      failed (scripts, the demo seed, a generator task's worker); without one: none.
    * an upload through the API: pending → running (a worker claims it with a conditional
      UPDATE; ``algorithm_evaluation_attempts`` counts the claims) → done, or failed with a
      warning in ``warnings`` saying why.
    * pending or running for longer than the queue lets a task run (its worker died, or its
      queue message was lost) → pending again, queued by the scheduler's tick; a running one
      that has had ``task_algorithm.MAX_ATTEMPTS`` claims → failed.

    ``algorithm_evaluation_at`` is when it last changed (created, queued, claimed, ended).
    """

    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    output_kind = models.CharField(max_length=20, choices=OutputKind.choices)
    source = models.CharField(max_length=20, choices=DataSource.choices)
    builtin_key = models.CharField(max_length=80, blank=True)
    input_shape = models.JSONField(help_text="Shape of one input, e.g. [1, 8, 8].")
    n_outputs = models.PositiveIntegerField(help_text="Classes, target values, or input size.")
    class_labels = models.JSONField(null=True, blank=True)
    feature_names = models.JSONField(default=list, blank=True)
    target_name = models.CharField(max_length=120, blank=True)
    algorithm_path = models.CharField(
        max_length=200, blank=True, help_text="Dotted path of the algorithmic implementation."
    )
    algorithm_params = models.JSONField(
        default=dict, blank=True,
        help_text="Settings the algorithm was tuned to on the validation split (models_registry.tuning): "
                  "the path they were tuned for, the settings, and every setting tried with its score.",
    )
    sampler_spec = models.JSONField(null=True, blank=True)
    dataset_file = models.CharField(max_length=300)
    dataset_sha256 = models.CharField(max_length=64)
    n_samples = models.PositiveIntegerField()
    n_train = models.PositiveIntegerField()
    n_val = models.PositiveIntegerField()
    n_gate = models.PositiveIntegerField(default=0, help_text="Rows every decision between runs is made on.")
    n_test = models.PositiveIntegerField(help_text="Sealed rows: reported, read by no decision.")
    metric = models.CharField(max_length=32, choices=METRIC_CHOICES, default="accuracy",
                              help_text="The score every evaluation reports, in [0, 1], higher is better.")
    warnings = models.JSONField(default=list, blank=True)
    algorithm_evaluation = models.CharField(
        max_length=12, choices=AlgorithmEvaluation.choices, default=AlgorithmEvaluation.PENDING, db_index=True,
        help_text="Whether the algorithm has been measured on the gate and sealed test splits yet.",
    )
    algorithm_evaluation_at = models.DateTimeField(null=True, blank=True)
    algorithm_evaluation_attempts = models.PositiveSmallIntegerField(default=0)
    split_seed = models.PositiveIntegerField(default=0)
    latency_budget_ms = models.FloatField(default=200.0, validators=[MinValueValidator(0.001)])
    score_tolerance = models.FloatField(
        default=0.02, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Serving floor = algorithmic score minus this tolerance.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class NeuralModel(models.Model):
    """One lineage of versions for one task; exactly one version is active."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="neural_models")
    name = models.SlugField(max_length=80)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["task", "name"], name="model_name_unique_per_task")]

    def __str__(self) -> str:
        return f"{self.task.slug}/{self.name}"


class ModelVersion(models.Model):
    """An immutable version: genome, weights (safetensors + sha256), runtime, metrics, parent.

    Its weights and lineage never change. ``is_active`` changes only through the activation and
    rollback services; its scores only through ``version_rescore``, when its task's splits
    change (a task made before the gate split existed). Everything needed to rebuild the
    module is here: ``build_module(genome)`` plus the weights file.
    """

    IMMUTABLE_FIELDS = (
        "model_id", "number", "genome", "runtime", "weights_file", "weights_sha256",
        "artifact_file", "artifact_sha256", "parent_id",
    )

    model = models.ForeignKey(NeuralModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    genome = models.JSONField()
    runtime = models.CharField(max_length=20, choices=Runtime.choices, default=Runtime.TORCH_FP32)
    weights_file = models.CharField(max_length=300)
    weights_sha256 = models.CharField(max_length=64)
    artifact_file = models.CharField(max_length=300, blank=True, help_text="ONNX model for ONNX runtimes.")
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    is_active = models.BooleanField(default=False)
    score = models.FloatField(
        null=True, blank=True,
        help_text="Gate split score: what every decision compares (the task's metric).")
    score_split = models.CharField(
        max_length=12, choices=ScoreSplit.choices, default=ScoreSplit.GATE,
        help_text="Where ``score`` was measured: the gate split, or (versions made before the gate existed) "
                  "the old test split, until re-measured.")
    test_score = models.FloatField(null=True, blank=True, help_text="Sealed test split score, for reports only.")
    test_ci95_low = models.FloatField(null=True, blank=True)
    test_ci95_high = models.FloatField(null=True, blank=True)
    metric = models.CharField(max_length=32, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True, help_text="Batch of 1.")
    latency_p95_ms = models.FloatField(null=True, blank=True, help_text="Batch of 1.")
    latency_p95_ms_batch = models.FloatField(null=True, blank=True, help_text="Batch of 256.")
    n_parameters = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-number"]
        get_latest_by = "number"
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique_per_model"),
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(is_active=True), name="one_active_version_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            original = ModelVersion.objects.filter(pk=self.pk).values(*self.IMMUTABLE_FIELDS).first()
            if original is not None:
                changed = [f for f in self.IMMUTABLE_FIELDS if original[f] != getattr(self, f)]
                if changed:
                    raise ValidationError(f"model versions are immutable; refused change to {', '.join(changed)}")
        super().save(*args, **kwargs)


class PerformanceSample(models.Model):
    """A measurement of one implementation of a task.

    ``evaluation`` samples come from a held-out split, named by ``split``: the gate split
    (what decisions read) or the sealed test split (reports). ``live`` and ``shadow`` samples
    are aggregates flushed periodically by the serving tracker (never one row per request).
    ``version`` is null for the algorithmic implementation.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="performance_samples")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="performance_samples"
    )
    implementation = models.CharField(max_length=20, choices=Implementation.choices)
    source = models.CharField(max_length=20, choices=SampleSource.choices, default=SampleSource.EVALUATION)
    score = models.FloatField(null=True, blank=True)
    split = models.CharField(max_length=12, choices=ScoreSplit.choices, blank=True, db_index=True,
                             help_text="The split an evaluation sample was scored on (blank for live traffic).")
    metric = models.CharField(max_length=32, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)
    latency_p50_ms_batch = models.FloatField(null=True, blank=True)
    latency_p95_ms_batch = models.FloatField(null=True, blank=True)
    throughput_per_s = models.FloatField(null=True, blank=True)
    n_requests = models.PositiveIntegerField(default=0)
    n_errors = models.PositiveIntegerField(default=0)
    n_parameters = models.PositiveIntegerField(null=True, blank=True)
    size_bytes = models.PositiveIntegerField(null=True, blank=True)
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_mb = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["task", "implementation", "-created_at"]),
            models.Index(fields=["version", "-created_at"]),
        ]

    def __str__(self) -> str:
        who = f"v{self.version.number}" if self.version_id and self.version is not None else "algorithm"
        return f"{self.task.slug} {who} {self.source} {self.split or 'live'} score={self.score}"


class TaskCreationJob(models.Model):
    """The creation of a generator task, done by a worker: its samples are labelled there, not in a request.

    ``POST /api/tasks`` (JSON) validates what is cheap to validate and answers 202 with this
    row; ``models_registry.task_jobs`` owns its state machine:

    * pending → running: a worker claims it (a conditional UPDATE; a duplicate delivery does
      nothing). A running job whose ``heartbeat_at`` is older than ``PLASTICITY_HEARTBEAT_TIMEOUT``
      (its worker died) may be claimed again, up to ``MAX_ATTEMPTS`` claims in all.
    * running → done: the task exists (``task``) and its first model is queued for training.
    * running → failed: ``error`` says why (the algorithm raised or gave non-finite labels, the
      slug was taken meanwhile, ...); no task and no dataset file were left behind.
    * running → pending: the reconciler found it stale and queued it again.

    ``task`` is set in the transaction that creates the task, so an attempt that follows a
    worker's death after that point does not label twice.
    """

    status = models.CharField(max_length=12, choices=TaskJobStatus.choices, default=TaskJobStatus.PENDING,
                              db_index=True)
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    message = models.CharField(max_length=200, blank=True, help_text="What the job is doing now, or did last.")
    error = models.TextField(blank=True)
    # What the request asked for, validated when it was accepted.
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80, help_text="The slug the task will have (checked free when accepted).")
    description = models.TextField(blank=True)
    algorithm_path = models.CharField(max_length=200)
    sampler_spec = models.JSONField()
    latency_budget_ms = models.FloatField(default=200.0)
    metric = models.CharField(max_length=32, blank=True)
    split_seed = models.PositiveIntegerField(default=0)
    genome = models.JSONField(null=True, blank=True, help_text="The first model's genome, if one was given.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    worker = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"task job #{self.pk} ({self.slug}, {self.status})"


class DatasetVersion(models.Model):
    """One version of a task's dataset: the whole dataset as it was then, and how it came to be.

    Version 1 is the dataset the task was created with; every later one is the previous one plus
    appended rows (``source`` append) or, for the improvement predictor's run history, a
    replacement. The task's ``dataset_file`` is always its newest version's ``file``; older files
    are kept, so what any model version was trained on can be read again. An append adds rows
    ``[row_start, row_end)`` at the end and splits only those: every earlier row keeps its split,
    so a sealed test row stays sealed. Rows are immutable once written.

    ``content_sha256`` (the uploaded file's digest) and the client's ``idempotency_key`` make an
    append idempotent per upload: the same file, or the same key, on the same task answers the
    version it made instead of adding the rows twice (``models_registry.dataset_versions``).
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dataset_versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    source = models.CharField(max_length=12, choices=DatasetSource.choices)
    file = models.CharField(max_length=300, blank=True,
                            help_text="The whole dataset at this version (NPZ: X, y and the splits); empty once "
                                      "newer versions replaced it (PLASTICITY_DATASET_FILES_KEPT).")
    sha256 = models.CharField(max_length=64)
    rows_total = models.PositiveIntegerField()
    rows_added = models.PositiveIntegerField()
    row_start = models.PositiveIntegerField(help_text="First row this version added (0-based).")
    row_end = models.PositiveIntegerField(help_text="One past the last row this version added.")
    n_train = models.PositiveIntegerField()
    n_val = models.PositiveIntegerField()
    n_gate = models.PositiveIntegerField()
    n_test = models.PositiveIntegerField()
    content_sha256 = models.CharField(max_length=64, blank=True,
                                      help_text="sha256 of the uploaded file the rows came from (blank if none).")
    idempotency_key = models.CharField(max_length=200, blank=True,
                                       help_text="The client's Idempotency-Key header of the append, if it sent one.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["task", "-number"]
        get_latest_by = "number"
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="dataset_version_number_unique_per_task"),
            models.UniqueConstraint(fields=["task", "content_sha256"], condition=~models.Q(content_sha256=""),
                                    name="dataset_version_content_unique_per_task"),
            models.UniqueConstraint(fields=["task", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="dataset_version_key_unique_per_task"),
        ]

    def __str__(self) -> str:
        return f"{self.task.slug} data v{self.number}"


from models_registry.serving.models import InputDrift, InputSample, ServingState, ServingSwitch  # noqa: E402,F401
