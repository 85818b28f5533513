"""Serializers of the serving API: predictions, serving state, switches.

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
                  "windows of the last hour), `shadow` (agreement with the algorithm), floor and tolerance."
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
