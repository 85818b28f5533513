"""Serializers of the registry API: tasks, models and versions (read), and their requests."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from models_registry.choices import AlgorithmEvaluation, OutputKind
from models_registry.models import DatasetVersion, ModelVersion, NeuralModel, Task, TaskCreationJob
from models_registry.nn.genome import KINDS, GenomeError, validate_genome
from models_registry.nn.metrics import METRIC_CHOICES
from models_registry.selectors import algorithm_latest_sample, algorithm_tuning_of
from project.api.fields import MAX_ID, FiniteRepresentationMixin

# ----------------------------------------------------------------------------------- tasks


class AlgorithmEvaluationSerializer(FiniteRepresentationMixin, serializers.Serializer):
    """Where the measurement of a task's algorithm stands, and its gate score once measured."""

    status = serializers.ChoiceField(
        choices=AlgorithmEvaluation.choices,
        help_text="pending (queued for a worker), running (a worker is fitting and scoring it), done, failed (the "
                  "task's warnings say why; serving has no algorithmic score to compare neural versions with) "
                  "or none (the task has no algorithm).")
    gate_score = serializers.FloatField(allow_null=True, help_text="The algorithm's latest score on the gate split "
                                                                   "(what serving compares with); null until done.")
    updated_at = serializers.DateTimeField(allow_null=True, help_text="When the status last changed.")
    tuned = serializers.DictField(
        allow_null=True,
        help_text="The settings the algorithm was tuned to on the validation split before it was measured "
                  "(params, the metric's validation score, how many settings were tried of the grid); null when "
                  "its defaults are used (no grid, or a validation split under 200 rows).")


class TaskSerializer(serializers.ModelSerializer):
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True,
                                     help_text="What the task's creation found worth saying (a small gate split, ...).")
    models = serializers.SerializerMethodField(help_text="The task's neural models (id, name).")
    algorithm_evaluation = serializers.SerializerMethodField(
        help_text="The algorithm's measurement on the gate and sealed test splits: an upload's is done by a worker "
                  "after the task is created.")

    class Meta:
        model = Task
        fields = [
            "slug", "name", "description", "output_kind", "metric", "source", "builtin_key", "input_shape",
            "n_outputs", "class_labels", "feature_names", "target_name", "algorithm_path", "sampler_spec",
            "n_samples", "n_train", "n_val", "n_gate", "n_test", "split_seed", "latency_budget_ms",
            "score_tolerance", "warnings", "algorithm_evaluation", "models", "dataset_sha256", "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_models(self, obj: Task) -> list[dict]:
        return [{"id": m.pk, "name": m.name} for m in obj.neural_models.order_by("pk")]

    @extend_schema_field(AlgorithmEvaluationSerializer)
    def get_algorithm_evaluation(self, obj: Task) -> dict:
        gate = algorithm_latest_sample(task=obj)
        return AlgorithmEvaluationSerializer({
            "status": obj.algorithm_evaluation, "gate_score": gate.score if gate is not None else None,
            "updated_at": obj.algorithm_evaluation_at, "tuned": algorithm_tuning_of(obj),
        }).data


_GENOME_HELP = ("Optional architecture of the first model (its input_shape and outputs are filled in from the "
                "data). Without one, the first model is built from the data's shape — a residual CNN for images, "
                "a 1-D CNN for signals, an MLP for tables, an autoencoder for reconstruction — trained briefly "
                "by a worker, and the loop starts improving it.")
_METRIC_HELP = ("The task's metric (decides every promotion, trigger and serving choice): accuracy, "
                "balanced_accuracy, macro_f1, roc_auc (two classes) for classes; r2, mae_skill for values; "
                "reconstruction_r2. Default: balanced_accuracy when the classes are imbalanced, else accuracy; r2.")
_SPLIT_SEED_HELP = ("Seed of the random train/validation/gate/test split (default 0): the same rows and seed give "
                    "the same split, so results can be reproduced or compared with tools run outside Plasticity.")


class TaskUploadSerializer(serializers.Serializer):
    """multipart/form-data: a CSV (header row, one example per row) or an NPZ (arrays X and y)."""

    file = serializers.FileField(help_text="A .csv or .npz file.")
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True,
                                 help_text="Defaults to the slugified name.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    target_column = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                          help_text="CSV only; defaults to the last column.")
    output_kind = serializers.ChoiceField(choices=OutputKind.choices, required=False, allow_blank=True,
                                          help_text="Inferred from the target when omitted.")
    algorithm_path = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                           help_text="Dotted path of the algorithmic implementation; "
                                                     "a classical default by output kind when omitted.")
    metric = serializers.ChoiceField(choices=METRIC_CHOICES, required=False, allow_blank=True, help_text=_METRIC_HELP)
    genome = serializers.JSONField(required=False, help_text=_GENOME_HELP)
    split_seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text=_SPLIT_SEED_HELP)


class TaskGeneratorSerializer(serializers.Serializer):
    """application/json: inputs drawn by a sampler and labelled by the algorithm itself."""

    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    algorithm_path = serializers.CharField(max_length=200, help_text="Dotted path of the labelling algorithm.")
    sampler_spec = serializers.DictField(
        help_text='e.g. {"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 2000}',
    )
    latency_budget_ms = serializers.FloatField(required=False, min_value=0.001, max_value=3_600_000)
    metric = serializers.ChoiceField(choices=METRIC_CHOICES, required=False, allow_blank=True, help_text=_METRIC_HELP)
    genome = serializers.JSONField(required=False, help_text=_GENOME_HELP)
    split_seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text=_SPLIT_SEED_HELP)


class TaskCreationJobSerializer(serializers.ModelSerializer):
    """A generator task's creation, done by a worker: its state, progress and (once done) its task."""

    url = serializers.SerializerMethodField(help_text="Where to read this job (also the 202's Location header).")
    task: serializers.SlugRelatedField[Task] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True,
        help_text="The created task's slug once it exists (null before); read it at /api/tasks/<slug>.")
    created_by = serializers.CharField(source="created_by.get_username", read_only=True, allow_null=True,
                                       default=None, help_text="Who asked for the task.")
    progress = serializers.FloatField(read_only=True, help_text="0 to 1: labelling the samples is most of it.")
    error = serializers.CharField(read_only=True, help_text="Why the job failed (empty unless status is failed).")

    class Meta:
        model = TaskCreationJob
        fields = [
            "id", "url", "status", "progress", "message", "error", "task", "name", "slug", "description",
            "algorithm_path", "sampler_spec", "latency_budget_ms", "metric", "split_seed", "genome", "created_by",
            "attempts", "created_at", "started_at", "heartbeat_at", "finished_at",
        ]
        read_only_fields = fields

    def get_url(self, obj: TaskCreationJob) -> str:
        return reverse("task-job-detail", args=[obj.pk])


class DatasetVersionSerializer(serializers.ModelSerializer):
    """One version of a task's dataset: its rows, its splits, and where it came from."""

    task: serializers.SlugRelatedField[Task] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    parent_number = serializers.IntegerField(
        source="parent.number", read_only=True, allow_null=True, default=None,
        help_text="Number of the version this one was made from (null for version 1).")
    created_by = serializers.CharField(source="created_by.get_username", read_only=True, allow_null=True,
                                       default=None, help_text="Who created the task or appended the rows.")
    row_range = serializers.SerializerMethodField(
        help_text="[first, end): the rows this version added, 0-based, end excluded.")

    class Meta:
        model = DatasetVersion
        fields = [
            "id", "task", "number", "parent_number", "source", "rows_total", "rows_added", "row_range", "n_train", "n_val",
            "n_gate", "n_test", "sha256", "content_sha256", "idempotency_key", "created_by", "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {"sha256": {"help_text": "sha256 of the whole dataset file at this version."}}

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2))
    def get_row_range(self, obj: DatasetVersion) -> list[int]:
        return [obj.row_start, obj.row_end]


class DatasetAppendResultSerializer(DatasetVersionSerializer):
    created = serializers.BooleanField(
        read_only=True, help_text="false: this file or Idempotency-Key had already made this version; nothing "
                                  "was added.")

    class Meta(DatasetVersionSerializer.Meta):
        fields = [*DatasetVersionSerializer.Meta.fields, "created"]
        read_only_fields = fields


class DatasetAppendSerializer(serializers.Serializer):
    """multipart/form-data: rows with the task's columns (CSV) or its input shape (NPZ)."""

    file = serializers.FileField(help_text="A .csv (the task's column names in the header) or an .npz (X, y).")


# ---------------------------------------------------------------------------------- models


class VersionScoresMixin(serializers.Serializer):
    """Every score says which split it is: the gate score (decisions) and the sealed test score (reports)."""

    gate_score = serializers.FloatField(source="score", read_only=True, allow_null=True,
                                        help_text="Score on the gate split: what every decision compares.")
    test_score = serializers.FloatField(read_only=True, allow_null=True,
                                        help_text="Score on the sealed test split (reports only; no decision reads it).")
    test_ci95 = serializers.SerializerMethodField(help_text="95 % interval of test_score (Wilson or bootstrap).")

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2,
                                               allow_null=True))
    def get_test_ci95(self, obj: ModelVersion) -> list[float] | None:
        if obj.test_ci95_low is None or obj.test_ci95_high is None:
            return None
        return [obj.test_ci95_low, obj.test_ci95_high]


class VersionBriefSerializer(FiniteRepresentationMixin, VersionScoresMixin, serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "number", "runtime", "gate_score", "test_score", "test_ci95", "score_split", "metric",
                  "latency_p95_ms", "n_parameters", "created_at"]
        read_only_fields = fields


class NeuralModelSerializer(serializers.ModelSerializer):
    task: serializers.SlugRelatedField[Task] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    active_version = serializers.SerializerMethodField()
    n_versions = serializers.SerializerMethodField()

    class Meta:
        model = NeuralModel
        fields = ["id", "task", "name", "description", "active_version", "n_versions", "created_at"]
        read_only_fields = fields

    @extend_schema_field(VersionBriefSerializer(allow_null=True))
    def get_active_version(self, obj: NeuralModel) -> dict | None:
        active = next((v for v in obj.versions.all() if v.is_active), None)
        return VersionBriefSerializer(active).data if active is not None else None

    def get_n_versions(self, obj: NeuralModel) -> int:
        return len(obj.versions.all())


class NeuralModelCreateSerializer(serializers.Serializer):
    task = serializers.SlugRelatedField(slug_field="slug", queryset=Task.objects.all(),
                                        help_text="The task's slug.")
    name = serializers.CharField(max_length=80, help_text="Slugified: 'Small Net' becomes small-net.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    genome = serializers.JSONField(
        help_text="Architecture of the initial version; its input_shape must be the task's, its output "
                  "size the task's n_outputs (an autoencoder for reconstruction tasks). The initial "
                  "version is trained briefly and activated.",
    )

    def validate(self, attrs: dict) -> dict:
        task: Task = attrs["task"]
        try:
            genome = validate_genome(attrs["genome"])
        except GenomeError as exc:
            raise serializers.ValidationError({"genome": [str(exc)]}) from None
        problems = []
        if list(genome["input_shape"]) != list(task.input_shape):
            problems.append(f"input_shape must be the task's {task.input_shape}, got {genome['input_shape']}")
        if task.output_kind == OutputKind.RECONSTRUCTION:
            if genome["kind"] != "autoencoder":
                problems.append("a reconstruction task needs kind 'autoencoder'")
        elif genome["kind"] == "autoencoder":
            supervised = [k for k in KINDS if k != "autoencoder"]
            problems.append(f"a {task.output_kind} task needs a supervised kind ({', '.join(supervised)})")
        elif genome["output_dim"] != task.n_outputs:
            problems.append(f"output_dim must be the task's n_outputs ({task.n_outputs}), got {genome['output_dim']}")
        if genome["kind"] == "cnn" and len(task.input_shape) != 3:
            problems.append("kind 'cnn' needs image inputs (input_shape [C, H, W])")
        if problems:
            raise serializers.ValidationError({"genome": problems})
        attrs["genome"] = genome
        return attrs


class RollbackSerializer(serializers.Serializer):
    to_version = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_ID,
        help_text="Id of the version to re-activate; by default the active version's parent.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200)


class ActivateSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200)


# -------------------------------------------------------------------------------- versions


class ModelVersionSerializer(FiniteRepresentationMixin, VersionScoresMixin, serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    task = serializers.CharField(source="model.task.slug", read_only=True)
    metrics = serializers.JSONField(read_only=True)
    genome = serializers.JSONField(read_only=True)
    produced_by_run = serializers.SerializerMethodField(help_text="The improvement run that made this version.")

    class Meta:
        model = ModelVersion
        fields = [
            "id", "model", "model_name", "task", "number", "genome", "runtime", "is_active", "parent",
            "gate_score", "test_score", "test_ci95", "score_split", "metric", "latency_p50_ms", "latency_p95_ms",
            "latency_p95_ms_batch", "n_parameters",
            "size_bytes", "metrics", "weights_sha256", "artifact_sha256", "note", "produced_by_run", "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_produced_by_run(self, obj: ModelVersion) -> int | None:
        runs = obj.produced_by_runs.all()
        return runs[0].pk if runs else None
