"""Serving records: the current serving state of each task, the history of its switches, feedback."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from models_registry.choices import Implementation
from models_registry.serving.choices import SwitchReason
from models_registry.serving.conf import serving_setting


def default_shadow_fraction() -> float:
    return serving_setting("PLASTICITY_SHADOW_FRACTION")


def default_hysteresis() -> float:
    return serving_setting("PLASTICITY_SERVING_HYSTERESIS")


def default_min_dwell_s() -> float:
    return serving_setting("PLASTICITY_SERVING_MIN_DWELL_S")


class ServingState(models.Model):
    """Which implementation answers a task's live predictions right now: one row per task.

    Only ``serving_switch`` changes ``implementation``/``version`` (and records a
    ``ServingSwitch``); the tuning fields (shadow fraction, tolerance, hysteresis, dwell)
    may be edited by an operator. ``version`` is the neural version served and is null
    while the algorithm serves. ``since`` is when the implementation last changed (the
    dwell clock); ``updated_at`` moves on every write, so serving processes notice changes.
    ``pinned`` is set when an operator forces an implementation: automatic decisions then
    leave the implementation alone (a pinned neural task still follows its active version).
    """

    task = models.OneToOneField("models_registry.Task", on_delete=models.CASCADE, related_name="serving_state")
    implementation = models.CharField(
        max_length=20, choices=Implementation.choices, default=Implementation.ALGORITHMIC
    )
    version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    since = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=40, choices=SwitchReason.choices, default=SwitchReason.INITIAL)
    detail = models.CharField(max_length=300, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    pinned = models.BooleanField(default=False, help_text="Forced by an operator: no automatic switching.")
    shadow_fraction = models.FloatField(
        default=default_shadow_fraction, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Fraction of live neural requests also run on the algorithm, off the request path.",
    )
    tolerance = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Overrides the task's score tolerance (floor = algorithmic score − tolerance).",
    )
    hysteresis = models.FloatField(
        default=default_hysteresis, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Extra score margin the challenger needs before serving switches to it.",
    )
    min_dwell_s = models.FloatField(
        default=default_min_dwell_s, validators=[MinValueValidator(0.0)],
        help_text="Seconds an implementation serves before an automatic switch away (a floor breach excepted).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task__slug"]

    def __str__(self) -> str:
        who = f"v{self.version.number}" if self.version_id and self.version is not None else ""
        return f"{self.task.slug}: {self.implementation} {who}".strip()

    def effective_tolerance(self) -> float:
        return self.tolerance if self.tolerance is not None else self.task.score_tolerance


class ServingSwitch(models.Model):
    """One change of the serving implementation or of the neural version served, with its evidence.

    Rows are written only by ``serving_switch`` and never changed. ``from_implementation``
    is blank for a task's first decision. ``evidence`` holds the measurements the decision
    was made on (scores, latencies, floor, shadow agreement, ...).
    """

    task = models.ForeignKey("models_registry.Task", on_delete=models.CASCADE, related_name="serving_switches")
    from_implementation = models.CharField(max_length=20, choices=Implementation.choices, blank=True)
    to_implementation = models.CharField(max_length=20, choices=Implementation.choices)
    from_version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=40, choices=SwitchReason.choices)
    detail = models.CharField(max_length=300, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="Operator username for forced switches.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"]), models.Index(fields=["reason", "-created_at"])]
        verbose_name_plural = "serving switches"

    def __str__(self) -> str:
        return f"{self.task.slug}: {self.from_implementation or '-'} → {self.to_implementation} ({self.reason})"



class Feedback(models.Model):
    """A true label or value a client reported for one row of one prediction, with what was predicted.

    Written only by ``feedback_record`` and never changed. ``prediction`` is the digest of the
    prediction id (``serving.prediction_ids``) and ``row`` the row of its batch: the pair is
    unique, so the same report sent twice counts once. ``predicted`` and ``truth`` are a class
    index (classes) or a list of values; ``correct`` (classes) and ``abs_error`` (values: the
    mean absolute error over the outputs) are derived when recorded. ``predicted_at`` is when
    the prediction was made (from the id); live scores are computed over recent predictions.
    ``version`` is null for the algorithm.
    """

    task = models.ForeignKey("models_registry.Task", on_delete=models.CASCADE, related_name="feedback")
    implementation = models.CharField(max_length=20, choices=Implementation.choices)
    version = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    prediction = models.CharField(max_length=32, help_text="Digest of the prediction id (hex).")
    row = models.PositiveIntegerField(default=0, help_text="Row of the predicted batch.")
    predicted = models.JSONField()
    truth = models.JSONField()
    correct = models.BooleanField(null=True, blank=True)
    abs_error = models.FloatField(null=True, blank=True)
    predicted_at = models.DateTimeField()
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-predicted_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "row"], name="feedback_once_per_prediction_row"),
        ]
        indexes = [models.Index(fields=["task", "implementation", "version", "-predicted_at"])]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.task.slug} {self.implementation} {self.prediction[:8]}:{self.row}"


class InputSample(models.Model):
    """A uniform sample of one task's live predict inputs from one web process's flush window.

    Written by the serving tracker's flush (``input_samples_write``), never changed, trimmed by the
    drift check to what its window needs. ``data`` is the rows as float32 ``.npy`` bytes
    (``(rows, prod(input_shape))``; never a pickle); ``seen`` is how many rows the window served.
    """

    task = models.ForeignKey("models_registry.Task", on_delete=models.CASCADE, related_name="input_samples")
    rows = models.PositiveIntegerField()
    seen = models.PositiveIntegerField(default=0, help_text="Rows served in the window the sample was drawn from.")
    data = models.BinaryField(help_text="float32 .npy bytes, (rows, features).")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.task.slug}: {self.rows} input rows at {self.created_at:%Y-%m-%d %H:%M:%S}"


class InputDrift(models.Model):
    """One drift alarm: the task's recent live inputs moved away from its training split.

    Written only by ``input_drift_record`` and never changed; ``evidence`` holds the report
    (features that moved with their PSI and p-value, rows compared, threshold). The genetic drift
    trigger of the task's models reads the latest alarm since each model's last run.
    """

    task = models.ForeignKey("models_registry.Task", on_delete=models.CASCADE, related_name="input_drifts")
    psi_max = models.FloatField()
    rows = models.PositiveIntegerField()
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.task.slug}: input drift (PSI {self.psi_max:.2f} over {self.rows} rows)"


class DriftReading(models.Model):
    """What one input drift check of one task measured, alarm or not: the series behind the drift chart.

    Written only by ``drift_reading_record`` (every check that compared rows; a skipped check writes
    none) and never changed; the newest ``PLASTICITY_DRIFT_READINGS_KEEP`` per task are kept.
    ``features`` are the largest PSIs of that check, largest first ({"feature", "psi", "p_value",
    "moved"}); ``threshold`` is the configured PSI threshold the check used; ``alarm`` is the
    ``InputDrift`` the check recorded, if it raised one.
    """

    task = models.ForeignKey("models_registry.Task", on_delete=models.CASCADE, related_name="drift_readings")
    psi_max = models.FloatField()
    threshold = models.FloatField()
    rows = models.PositiveIntegerField(help_text="Live rows the verdict rests on.")
    drifted = models.BooleanField(default=False)
    features = models.JSONField(default=list, blank=True)
    alarm = models.ForeignKey(InputDrift, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.task.slug}: PSI {self.psi_max:.3f} over {self.rows} rows at {self.created_at:%Y-%m-%d %H:%M:%S}"
