from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from improvement.choices import RunOrigin, RunStatus
from improvement.strategies.registry import strategy_choices
from models_registry.models import ModelVersion, NeuralModel


def run_budget_cap_s() -> float:
    """The longest training budget a run may have: the worker's task timeout (``Q_TIMEOUT``) less
    a margin for the evaluation, gate and saving that follow training (10 %, at least 2 minutes).
    A longer budget would have the worker killed mid-run by its own timeout."""
    timeout = float(settings.Q_CLUSTER["timeout"])
    return max(30.0, timeout - max(120.0, 0.1 * timeout))


def run_budget_cap_message() -> str:
    timeout = float(settings.Q_CLUSTER["timeout"])
    return (f"at most {run_budget_cap_s():g} s: the worker's task timeout (Q_TIMEOUT, {timeout:g} s) less the time "
            "the evaluation after training needs; raise Q_TIMEOUT for longer runs")


class ImprovementConfig(models.Model):
    """The one configuration row (pk=1) of the self-improvement loop.

    Fields and defaults follow the specification's ``SelfImprovementConfig``; each strategy's
    trigger thresholds are here too. Every process reads it from the database at the start of
    each cycle and run, so an edit takes effect without a restart.
    """

    enabled = models.BooleanField(
        "loop enabled", default=True,
        help_text="Off: no scheduled cycle starts (a forced one still does); runs in flight finish.",
    )
    auto_start = models.BooleanField(
        "start the loop at boot", default=True,
        help_text="Start the loop when the system starts (manage.py serve), if it is enabled.",
    )
    improvement_interval = models.FloatField(
        "cycle interval (s)", default=300.0, validators=[MinValueValidator(1.0), MaxValueValidator(7 * 86400.0)],
        help_text="Seconds between cycles (at most a week)."
    )
    max_concurrent_improvements = models.PositiveIntegerField(
        "runs at once (at most)", default=3, validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="Improvement runs queued or running at the same time; a cycle fills only the free slots.",
    )
    performance_threshold = models.FloatField(
        "gain needed to promote", default=0.1, validators=[MinValueValidator(0.0), MaxValueValidator(10.0)],
        help_text="Relative gain required to promote (0.1 = 10% less error / latency / size).",
    )
    promotion_alpha = models.FloatField(
        "significance level (α)", default=0.05, validators=[MinValueValidator(0.0001), MaxValueValidator(0.5)],
        help_text="Significance level of the gate's paired test (one-sided): a candidate is promoted only "
                  "when the test rejects 'no improvement' on the gate split at this level.",
    )
    hormone_driven = models.BooleanField(
        "hormones set priorities", default=True,
        help_text="Hormone levels weight which strategy runs first; off: plain trigger order.",
    )
    genetic_enhanced = models.BooleanField(
        "genetic triggers", default=True,
        help_text="Plateaus, drift and new data start architecture evolution, whatever the score.",
    )
    cross_model_distillation = models.BooleanField(
        "cross-model distillation", default=True,
        help_text="A weaker model may learn from the best implementation of its task (teacher-student).",
    )
    model_backup_enabled = models.BooleanField(
        "keep old versions as backups", default=True,
        help_text="Off: a promotion deletes the version it replaces (no rollback to it).",
    )
    improvement_history_size = models.PositiveIntegerField(
        "runs kept in the history", default=1000, validators=[MinValueValidator(1), MaxValueValidator(10_000_000)],
        help_text="The newest finished runs kept; older ones are trimmed (versions still in use are kept).",
    )

    # Strategy triggers.
    training_score_below = models.FloatField(
        "retrain below score", default=0.75, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Training runs on a model whose gate score (or live score, beyond its interval) is below this.",
    )
    architecture_score_low = models.FloatField(
        "architecture band: from score", default=0.75, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Architecture search runs on a model whose score is in [this, the band's upper end).",
    )
    architecture_score_high = models.FloatField(
        "architecture band: below score", default=0.85, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Upper end (excluded) of the architecture search's score band.",
    )
    distillation_teacher_min_score = models.FloatField(
        "teacher's minimum score", default=0.85, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Distillation runs only from a teacher (the task's best implementation) scoring at least this.",
    )
    optimization_latency_ms = models.FloatField(
        "optimize above p95 latency (ms)",
        null=True, blank=True, validators=[MinValueValidator(0.001), MaxValueValidator(3_600_000.0)],
        help_text="p95 latency trigger; empty = each task's own latency budget (default 200 ms).",
    )
    optimization_score_tolerance = models.FloatField(
        "score an optimization may lose", default=0.005, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Score an optimization may lose (absolute).",
    )
    rejection_cooldown_s = models.FloatField(
        "cooldown after a rejection (s)", default=900.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(30 * 86400.0)],
        help_text="After a rejection, the same strategy waits this long before it is tried on that model again.",
    )
    search_patience_trials = models.PositiveIntegerField(
        "search patience (trials)", default=40, validators=[MinValueValidator(5), MaxValueValidator(100_000)],
        help_text="When nothing else runs, a model's architecture search keeps exploring until this many of its "
                  "latest trials found nothing better than its best.",
    )
    run_time_budget_s = models.FloatField(
        "training budget per run (s)", default=240.0, validators=[MinValueValidator(5.0), MaxValueValidator(86400.0)],
        help_text="Wall-clock budget of one run's training."
    )
    # Input drift (models_registry.serving.drift): live predict inputs against the training split.
    drift_psi_threshold = models.FloatField(
        "drift threshold (PSI)", default=0.25, validators=[MinValueValidator(0.01), MaxValueValidator(10.0)],
        help_text="Population stability index at which a feature of the live inputs counts as moved "
                  "(0.1 = slight, 0.25 = significant shift); the move must also be statistically significant.",
    )
    drift_min_rows = models.PositiveIntegerField(
        "drift: fewest live rows", default=500, validators=[MinValueValidator(50), MaxValueValidator(1_000_000)],
        help_text="Fewest recent live rows a drift verdict rests on.",
    )
    drift_window_rows = models.PositiveIntegerField(
        "drift: live rows compared", default=2000, validators=[MinValueValidator(50), MaxValueValidator(1_000_000)],
        help_text="Most recent live rows compared with the training split (older samples are dropped).",
    )
    drift_cooldown_s = models.FloatField(
        "cooldown after a drift alarm (s)", default=1800.0, validators=[MinValueValidator(0.0), MaxValueValidator(30 * 86400.0)],
        help_text="After an input drift alarm, seconds before the same task may raise another.",
    )
    # Retraining without forgetting (improvement.runs.promotion.rehearsal_judge).
    forgetting_tolerance = models.FloatField(
        "score the old rows may lose", default=0.01, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Score (absolute) a score run may lose on the gate rows the active version was trained with "
                  "when the task has new rows since: a larger loss the paired test confirms refuses the candidate, "
                  "even if it gains overall.",
    )
    rehearsal_min_new_gate_rows = models.PositiveIntegerField(
        "new gate rows to judge apart", default=20, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Fewest gate rows added since the active version was trained for a score run to be judged on the "
                  "old and the new rows apart.",
    )
    # The learned parts of the loop (improvement.predictor, improvement.neural_hormones).
    predictor_min_history = models.PositiveIntegerField(
        "runs before the gain predictor", default=30, validators=[MinValueValidator(20)],
        help_text="Finished runs needed before the learned improvement predictor is trained and may rank runs.",
    )
    neural_hormones = models.BooleanField(
        "neural hormone sizing", default=True,
        help_text="Hormone releases are sized by the hormone-response task's serving implementation "
                  "(neural when serving says it beats the algorithm); off: always the algorithm.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "improvement configuration"
        verbose_name_plural = "improvement configuration"

    def __str__(self) -> str:
        return "Improvement configuration"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.architecture_score_low > self.architecture_score_high:
            raise ValidationError(
                {"architecture_score_low": "must not be above architecture_score_high"}
            )
        if self.drift_min_rows > self.drift_window_rows:
            raise ValidationError({"drift_min_rows": "must not be above drift_window_rows"})
        if self.run_time_budget_s > run_budget_cap_s():
            raise ValidationError({"run_time_budget_s": run_budget_cap_message()})

    @classmethod
    def load(cls) -> ImprovementConfig:
        config, _ = cls.objects.get_or_create(pk=1)
        return config


class ImprovementRun(models.Model):
    """One strategy applied to one model.

    Transitions (each made by one service with a conditional UPDATE):

    * queued → running      (a worker claims it; a duplicate delivery finds it not queued)
    * queued → cancelled    (an operator cancels before it starts)
    * running → promoted    (candidate measurably better; new version activated)
    * running → rejected    (candidate not better enough, or a guard rail failed)
    * running → failed      (error, non-finite loss, or the worker vanished)
    * running → cancelled   (cancel requested; the worker stops at its next progress report)
    * running → queued      (the reconciler requeues a run whose worker vanished, once)
    """

    model = models.ForeignKey(NeuralModel, on_delete=models.CASCADE, related_name="improvement_runs")
    strategy = models.CharField(max_length=40, choices=strategy_choices)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    origin = models.CharField(max_length=12, choices=RunOrigin.choices, default=RunOrigin.LOOP)
    trigger_reason = models.CharField(max_length=300, blank=True)
    priority = models.FloatField(default=0.0)
    params = models.JSONField(default=dict, blank=True)
    features = models.JSONField(
        default=dict, blank=True,
        help_text="The model, strategy, task and hormone state when the run was created (the predictor's inputs).",
    )
    baseline_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by_runs"
    )
    objective = models.CharField(max_length=20, blank=True, help_text="score, latency or size")
    baseline_metrics = models.JSONField(default=dict, blank=True)
    candidate_metrics = models.JSONField(default=dict, blank=True)
    gain = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=300, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    curve = models.JSONField(default=list, blank=True, help_text="Per-epoch loss/score points.")
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=120, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    checkpoint = models.JSONField(
        default=dict, blank=True,
        help_text="What a later attempt resumes from if this run's worker dies: per phase, the best weights "
                  "so far (a file in storage), their validation score and whether the phase finished.")
    cancel_requested = models.BooleanField(default=False)
    cpu_seconds = models.FloatField(null=True, blank=True)
    peak_memory_mb = models.FloatField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["model", "strategy", "-finished_at"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} {self.strategy} on {self.model} ({self.status})"

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class SearchCandidate(models.Model):
    """One trial of an architecture search (a genome and its training settings), trained by whichever
    worker claims it first; the model's Optuna study holds the same trial by ``trial_number``.

    pending → running (claimed by a conditional UPDATE) → done | failed. A running candidate
    whose heartbeat went stale is claimed again by the search's own worker.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(ImprovementRun, on_delete=models.CASCADE, related_name="search_candidates")
    generation = models.PositiveIntegerField()
    index = models.PositiveIntegerField(help_text="Position in the run's search (seeds its training).")
    genome = models.JSONField()
    train_params = models.JSONField(default=dict, blank=True,
                                    help_text="The trial's training settings (learning rate, batch size, augmentation, ...).")
    trial_number = models.PositiveIntegerField(null=True, blank=True, help_text="The trial's number in the model's study.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    worker = models.CharField(max_length=120, blank=True)
    score = models.FloatField(null=True, blank=True, help_text="Validation score.")
    latency_ms = models.FloatField(null=True, blank=True)
    n_parameters = models.PositiveIntegerField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    weights_file = models.CharField(max_length=300, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="search_candidate_index_unique")]

    def __str__(self) -> str:
        return f"run #{self.run_id} candidate {self.index} ({self.status})"


class LoopState(models.Model):
    """The one row (pk=1) saying whether the self-improvement loop runs, and when it cycled.

    Also the mutex of a cycle: a cycle locks this row, so two processes never hand out the
    same free slots.
    """

    running = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_cycle_at = models.DateTimeField(null=True, blank=True)
    next_cycle_at = models.DateTimeField(null=True, blank=True)
    cycles = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "loop state"
        verbose_name_plural = "loop state"

    def __str__(self) -> str:
        return "running" if self.running else "stopped"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> LoopState:
        state, _ = cls.objects.get_or_create(pk=1)
        return state


class CycleRecord(models.Model):
    """One pass of the scheduler: what it measured, what it chose and why, what it enqueued."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        FORCED = "forced", "Forced"
        SLOT_FREED = "slot_freed", "A run finished"
        BOOT = "boot", "System boot"

    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    duration_ms = models.FloatField(default=0.0)
    in_flight_before = models.PositiveIntegerField(default=0)
    slots = models.IntegerField(default=0)
    enqueued = models.PositiveIntegerField(default=0)
    hormone_driven = models.BooleanField(default=True)
    hormone_levels = models.JSONField(default=dict, blank=True)
    weights = models.JSONField(default=dict, blank=True, help_text="Strategy weights from the hormone levels.")
    decisions = models.JSONField(default=list, blank=True, help_text="Every (model, strategy) pair considered.")
    notes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"cycle {self.started_at:%Y-%m-%d %H:%M:%S} ({self.trigger}, {self.enqueued} enqueued)"


class GeneticTrigger(models.Model):
    """An environmental condition that started (or asked for) architecture evolution of a model, or the
    retraining that drift calls for; ``evidence`` is what the condition was seen on, ``run`` the run it started."""

    class Kind(models.TextChoices):
        PLATEAU = "plateau", "Training plateau"
        DRIFT = "drift", "Drift seen by serving"
        DATA_GROWTH = "data_growth", "Task data grew"

    model = models.ForeignKey(NeuralModel, on_delete=models.CASCADE, related_name="genetic_triggers")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    evidence = models.JSONField(default=dict)
    run = models.ForeignKey(ImprovementRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} on {self.model}"
