"""Serializer helpers shared by the apps' APIs."""

from __future__ import annotations

import math
from typing import Any

import django_filters
from django import forms
from rest_framework import serializers


def finite(value: Any) -> Any:
    """``value`` with every NaN/±inf float (at any depth) replaced by None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class FiniteRepresentationMixin:
    """For serializers whose metrics may hold NaN or infinity (a diverged candidate, say)."""

    def to_representation(self, instance):
        return finite(super().to_representation(instance))


# The largest id a database column holds (64-bit signed); bigger numbers cannot name a row.
MAX_ID = 2**63 - 1


class PrimaryKeyField(serializers.PrimaryKeyRelatedField):
    """A related object by id; an id too large for the database is "does not exist", not a 500."""

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and not 0 < data <= MAX_ID:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


class IdFilter(django_filters.NumberFilter):
    """Filter by an object id: a positive integer the database can hold (else a 400)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)
