"""Serializers of the hormones API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hormones.models import HormoneEvent
from project.api.fields import FiniteRepresentationMixin


class HormoneSerializer(FiniteRepresentationMixin, serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # drf-stubs: a declared field shadows Field.label; the metaclass pops it
    level = serializers.FloatField(help_text="Current level (decayed toward the baseline up to now).")
    baseline = serializers.FloatField()
    half_life_s = serializers.FloatField(help_text="Seconds for the distance to the baseline to halve.")
    min_level = serializers.FloatField()
    max_level = serializers.FloatField()
    updated_at = serializers.DateTimeField(allow_null=True, help_text="Last event; null if none yet.")


class HormoneEventSerializer(FiniteRepresentationMixin, serializers.ModelSerializer):
    hormone = serializers.CharField(source="hormone.name", read_only=True)
    context = serializers.JSONField(read_only=True)  # type: ignore[assignment]  # drf-stubs: a declared field shadows Field.context; the metaclass pops it

    class Meta:
        model = HormoneEvent
        fields = ["id", "hormone", "delta", "level_before", "level_after", "cause", "context", "created_at"]
        read_only_fields = fields


@extend_schema_field({"type": "object", "additionalProperties": {}})
class AnyObjectField(serializers.JSONField):
    pass


class BrainStateSerializer(FiniteRepresentationMixin, serializers.Serializer):
    latest = AnyObjectField(allow_null=True, help_text="The latest snapshot, or null before the first one.")
    history = serializers.ListField(child=AnyObjectField(), help_text="The latest `limit` snapshots, oldest first.")
