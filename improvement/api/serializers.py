"""Serializers of the improvement API: runs, strategies, configuration, loop answers."""

from __future__ import annotations

from typing import cast

from rest_framework import serializers

from improvement.models import ImprovementConfig, ImprovementRun, run_budget_cap_message, run_budget_cap_s
from improvement.strategies.registry import strategy_choices
from models_registry.models import NeuralModel
from models_registry.selectors import version_active
from project.api.fields import FiniteRepresentationMixin, PrimaryKeyField

# ------------------------------------------------------------------------------------- runs


class RunSerializer(FiniteRepresentationMixin, serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    task = serializers.CharField(source="model.task.slug", read_only=True)
    baseline_version_number = serializers.IntegerField(source="baseline_version.number", read_only=True,
                                                       allow_null=True, default=None)
    result_version_number = serializers.IntegerField(source="result_version.number", read_only=True,
                                                     allow_null=True, default=None)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, allow_null=True,
                                         default=None)
    duration_s = serializers.FloatField(read_only=True, allow_null=True)
    params = serializers.JSONField(read_only=True)

    class Meta:
        model = ImprovementRun
        fields = [
            "id", "model", "model_name", "task", "strategy", "status", "origin", "trigger_reason", "priority",
            "params", "objective", "gain", "decision", "progress", "progress_message", "cancel_requested",
            "baseline_version", "baseline_version_number", "result_version", "result_version_number",
            "attempts", "cpu_seconds", "peak_memory_mb", "duration_s", "requested_by", "error",
            "created_at", "started_at", "finished_at",
        ]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    baseline_metrics = serializers.JSONField(read_only=True)
    candidate_metrics = serializers.JSONField(read_only=True)
    curve = serializers.JSONField(read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "baseline_metrics", "candidate_metrics", "curve", "log", "worker",
                  "heartbeat_at"]
        read_only_fields = fields


class RunParamsSerializer(serializers.Serializer):
    """Optional knobs of one run; anything not given comes from the configuration and defaults."""

    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    time_budget_s = serializers.FloatField(required=False, min_value=1, max_value=24 * 3600,
                                           help_text="Wall-clock training budget (default: run_time_budget_s); "
                                                     "at most the worker's task timeout (Q_TIMEOUT) less a margin.")

    def validate_time_budget_s(self, value: float) -> float:
        if value > run_budget_cap_s():
            raise serializers.ValidationError(run_budget_cap_message())
        return value
    epochs = serializers.IntegerField(required=False, min_value=1, max_value=100_000)
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=65_536)
    lr = serializers.FloatField(required=False, min_value=1e-8, max_value=10)
    patience = serializers.IntegerField(required=False, min_value=1, max_value=100_000)
    trials = serializers.IntegerField(required=False, min_value=1, max_value=10_000,
                                      help_text="Architecture search: trials of this run (default 18).")
    parallel = serializers.IntegerField(required=False, min_value=1, max_value=64,
                                        help_text="Architecture search: trials asked at once, for the workers (default 2).")
    objectives = serializers.ListField(
        child=serializers.ChoiceField(choices=["score", "latency", "size"]), required=False, min_length=1,
        max_length=3, help_text='Architecture search: ["score"] (TPE, the default) or the front '
                                '["score", "latency", "size"] (NSGA-II); the score comes first.')
    population_size = serializers.IntegerField(required=False, min_value=1, max_value=256,
                                               help_text="Older clients: trials = population_size × generations.")
    generations = serializers.IntegerField(required=False, min_value=1, max_value=100)
    underfit_below = serializers.FloatField(required=False, min_value=0, max_value=1)
    temperature = serializers.FloatField(required=False, min_value=0.1, max_value=100,
                                         help_text="Distillation: softmax temperature of the soft targets (default 4).")
    alpha = serializers.FloatField(required=False, min_value=0, max_value=1,
                                   help_text="Distillation: weight of the teacher term; 1 − alpha goes to the "
                                             "labels (default 1: the teacher labels everything).")

    def validate_objectives(self, value: list[str]) -> list[str]:
        if value[0] != "score" or len(set(value)) != len(value):
            raise serializers.ValidationError("must start with \"score\" and name each objective once")
        return value

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"unknown parameter; allowed: {', '.join(self.fields)}"] for key in unknown}
                )
        return super().to_internal_value(data)


class RunCreateSerializer(serializers.Serializer):
    model = PrimaryKeyField(queryset=NeuralModel.objects.all(), help_text="Model id.")
    strategy = serializers.ChoiceField(choices=strategy_choices())
    params = RunParamsSerializer(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                   help_text="Why (shown in the history); defaults to who asked.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Every strategy registered now (a plugin registered after start-up included).
        cast(serializers.ChoiceField, self.fields["strategy"]).choices = strategy_choices()

    def validate_model(self, model: NeuralModel) -> NeuralModel:
        if version_active(model=model) is None:
            raise serializers.ValidationError(f"model {model} has no active version to improve")
        return model


# ------------------------------------------------------------------------------- strategies


class StrategySerializer(serializers.Serializer):
    name = serializers.CharField()
    objective = serializers.CharField(help_text="What a promotion must improve: score or latency.")
    description = serializers.CharField()


# --------------------------------------------------------------------------- configuration


class ConfigSerializer(serializers.ModelSerializer):
    """The loop's configuration. Fields are checked with the model's validators here; the whole row
    with ``full_clean()`` by ``config_update``, the one service that changes it."""

    class Meta:
        model = ImprovementConfig
        exclude = ["id"]
        read_only_fields = ["updated_at"]
        # Upper bounds the model does not set: a 1e308-second interval overflows the scheduler.
        extra_kwargs = {
            "improvement_interval": {"max_value": 7 * 24 * 3600},
            "max_concurrent_improvements": {"max_value": 256},
            "improvement_history_size": {"max_value": 10_000_000},
            "optimization_latency_ms": {"max_value": 3_600_000},
            "rejection_cooldown_s": {"max_value": 30 * 24 * 3600},
            "run_time_budget_s": {"max_value": 24 * 3600},
            "predictor_min_history": {"max_value": 1_000_000},
        }


# ---------------------------------------------------------------------------------- export


class ExportRunSerializer(serializers.Serializer):
    """One element of the JSON export (the CSV has the same columns). Documentation only."""

    id = serializers.IntegerField()
    model_id = serializers.IntegerField()
    model = serializers.CharField()
    task = serializers.CharField()
    strategy = serializers.CharField()
    status = serializers.CharField()
    origin = serializers.CharField()
    trigger_reason = serializers.CharField()
    priority = serializers.FloatField(allow_null=True)
    objective = serializers.CharField()
    gain = serializers.FloatField(allow_null=True)
    decision = serializers.CharField()
    baseline_version_id = serializers.IntegerField(allow_null=True)
    baseline_version_number = serializers.IntegerField(allow_null=True)
    result_version_id = serializers.IntegerField(allow_null=True)
    result_version_number = serializers.IntegerField(allow_null=True)
    attempts = serializers.IntegerField()
    cpu_seconds = serializers.FloatField(allow_null=True)
    peak_memory_mb = serializers.FloatField(allow_null=True)
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)
    params = serializers.JSONField()
    baseline_metrics = serializers.JSONField()
    candidate_metrics = serializers.JSONField()
