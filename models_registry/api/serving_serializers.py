"""Serializers of the serving API: predictions, feedback and live scores, serving state, switches.

The predict request and response serializers document the schema only: the hot path
validates inputs with numpy (``serving.inputs``) and builds its answer directly, because a
field-by-field serializer over a batch of 1024 inputs would cost more than the prediction.
"""

from __future__ import annotations

from rest_framework import serializers

from models_registry.choices import Implementation, Runtime
from models_registry.models import Task
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState, ServingSwitch
from project.api.fields import FiniteRepresentationMixin


class PredictRequestSerializer(serializers.Serializer):
    inputs = serializers.JSONField(
        help_text="One input of the task's `input_shape` (nested lists of numbers), or a batch of them "
                  "(one more leading dimension, at most `PLASTICITY_MAX_BATCH` inputs)."
    )


class PredictResponseSerializer(serializers.Serializer):
    task = serializers.SlugField(help_text="The task's slug.")
    implementation = serializers.ChoiceField(choices=Implementation.choices, help_text="Who answered.")
    version = serializers.IntegerField(allow_null=True, help_text="Version number; null for the algorithm.")
    version_id = serializers.IntegerField(allow_null=True)
    runtime = serializers.ChoiceField(choices=Runtime.choices, allow_null=True,
                                      help_text="The neural version's runtime; null for the algorithm.")
    outputs = serializers.JSONField(
        help_text="One output per input, always a list (a single input is a batch of one): class ids for "
                  "classification, lists of values for regression, arrays of the input's shape for reconstruction."
    )
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True,
                                   help_text="Class names of the outputs (classification tasks with class labels).")
    batch_size = serializers.IntegerField()
    prediction_id = serializers.CharField(
        allow_null=True,
        help_text="Signed id of this answer, one for the whole batch: quote it with a row index (0 for a single "
                  "input) in `POST /api/tasks/{slug}/feedback` once the true label or value is known. It encodes the "
                  "task, the implementation and version that answered, the time and the outputs, so nothing is "
                  "stored when predicting. Accepted for `PLASTICITY_FEEDBACK_MAX_AGE_S` (7 days by default). Null "
                  "for reconstruction tasks and for a batch of more than `PLASTICITY_PREDICTION_ID_MAX_VALUES` "
                  "output values (rows × outputs per row; 16,384 by default).")


class FeedbackItemSerializer(serializers.Serializer):
    prediction_id = serializers.CharField(help_text="The `prediction_id` of a predict answer of this task.")
    row = serializers.IntegerField(required=False, min_value=0,
                                   help_text="Row of the predicted batch (default 0: a single input).")
    truth = serializers.JSONField(
        required=False,
        help_text="The true answer of that row: a class index or class label (classification), a number or a list "
                  "of `n_outputs` numbers (regression).")
    rows = serializers.ListField(child=serializers.IntegerField(min_value=0), required=False,
                                 help_text="Instead of `row`/`truth`: several rows of the same prediction ...")
    truths = serializers.ListField(child=serializers.JSONField(), required=False,
                                   help_text="... and their true answers, in the same order.")


class FeedbackRequestSerializer(serializers.Serializer):
    items = FeedbackItemSerializer(
        many=True, help_text="At most `PLASTICITY_FEEDBACK_MAX_ROWS` rows in all (1,000 by default).")


class LiveScoreSerializer(FiniteRepresentationMixin, serializers.Serializer):
    implementation = serializers.ChoiceField(choices=Implementation.choices)
    version_id = serializers.IntegerField(allow_null=True, help_text="Null for the algorithm.")
    version = serializers.IntegerField(allow_null=True, help_text="Version number; null for the algorithm.")
    n = serializers.IntegerField(help_text="Reports the scores are computed on (the newest in the window).")
    reports_in_window = serializers.IntegerField()
    enough = serializers.BooleanField(
        help_text="Whether `n` reaches `PLASTICITY_FEEDBACK_MIN_COUNT`: switching and the training trigger use "
                  "live scores only then.")
    metric = serializers.CharField(help_text="The task's metric.")
    score = serializers.FloatField(help_text="The task's metric on the reports, in [0, 1].")
    score_ci95 = serializers.ListField(child=serializers.FloatField(), help_text="95 % interval of `score`.")
    correct = serializers.IntegerField(required=False, allow_null=True, help_text="Classes: rows predicted right.")
    accuracy = serializers.FloatField(required=False, allow_null=True)
    accuracy_ci95 = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True,
                                          help_text="Classes: Wilson 95 % interval of the accuracy.")
    mae = serializers.FloatField(required=False, allow_null=True, help_text="Values: mean absolute error.")
    mae_ci95 = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True,
                                     help_text="Values: mean ± 1.96 standard errors (null below 2 reports).")
    r2 = serializers.FloatField(required=False, allow_null=True,
                                help_text="Values: R² per output, clipped to [0, 1], averaged.")
    r2_ci95 = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True,
                                    help_text="Values: percentile-bootstrap 95 % interval of `r2`.")
    first_predicted_at = serializers.DateTimeField()
    last_predicted_at = serializers.DateTimeField()


class FeedbackLiveSerializer(serializers.Serializer):
    task = serializers.SlugField()
    output_kind = serializers.CharField()
    metric = serializers.CharField()
    window_s = serializers.FloatField(help_text="Reports of predictions made this many seconds back at most ...")
    window_rows = serializers.IntegerField(help_text="... the newest this many per implementation and version.")
    min_count = serializers.IntegerField(help_text="Reports a live score needs before decisions use it.")
    live = LiveScoreSerializer(many=True, help_text="One entry per implementation and version, neural first.")


class ServingStateSerializer(FiniteRepresentationMixin, serializers.ModelSerializer):
    task: serializers.SlugRelatedField[Task] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    version = serializers.IntegerField(source="version.number", allow_null=True, read_only=True)
    effective_tolerance = serializers.FloatField(read_only=True)

    class Meta:
        model = ServingState
        fields = ["task", "implementation", "version_id", "version", "since", "reason", "detail", "evidence",
                  "pinned", "shadow_fraction", "tolerance", "effective_tolerance", "hysteresis", "min_dwell_s",
                  "updated_at"]
        read_only_fields = fields


class RouteSerializer(serializers.Serializer):
    implementation = serializers.ChoiceField(choices=Implementation.choices)
    version_id = serializers.IntegerField(allow_null=True)
    version = serializers.IntegerField(allow_null=True)
    runtime = serializers.CharField(allow_null=True)
    shadow_fraction = serializers.FloatField()


class ServingSerializer(serializers.Serializer):
    task = serializers.SlugField()
    state = ServingStateSerializer(allow_null=True, help_text="Null until the task's first serving decision.")
    route = RouteSerializer(allow_null=True, help_text="What this server process routes predictions to now.")
    comparison = serializers.JSONField(
        help_text="Neural vs algorithmic: `held_out` (latest gate-split evaluation samples: `split` is \"gate\"), `live` (flushed tracker "
                  "windows of the last hour), `shadow` (agreement with the algorithm), `feedback` (live scores from reported "
                  "truths, as `GET /api/tasks/{slug}/feedback` gives them), floor and tolerance."
    )


class ServingForceSerializer(serializers.Serializer):
    implementation = serializers.ChoiceField(
        choices=[*Implementation.values, "auto"],
        help_text="Force `neural` or `algorithmic` (pins the task: no automatic switching), or `auto` to "
                  "remove the pin and let the measurements decide again.",
    )
    version_id = serializers.IntegerField(required=False, allow_null=True,
                                          help_text="Neural only: an active version of the task (default: the best).")
    detail = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                   help_text="Why, for the switch history.")


class ServingSwitchSerializer(FiniteRepresentationMixin, serializers.ModelSerializer):
    task: serializers.SlugRelatedField[Task] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    from_version = serializers.IntegerField(source="from_version.number", allow_null=True, read_only=True)
    to_version = serializers.IntegerField(source="to_version.number", allow_null=True, read_only=True)
    reason = serializers.ChoiceField(choices=SwitchReason.choices, read_only=True)

    class Meta:
        model = ServingSwitch
        fields = ["id", "task", "from_implementation", "to_implementation", "from_version_id", "from_version",
                  "to_version_id", "to_version", "reason", "detail", "evidence", "actor", "created_at"]
        read_only_fields = fields


class FeedbackResponseSerializer(serializers.Serializer):
    task = serializers.SlugField()
    received = serializers.IntegerField(help_text="Rows reported in the request.")
    recorded = serializers.IntegerField(help_text="Rows recorded now.")
    duplicates = serializers.IntegerField(help_text="Rows reported before (or twice in this request): counted once.")
    switch = ServingSwitchSerializer(
        allow_null=True, help_text="The serving switch the new feedback led to (live scores now conclusive), if any.")
