"""Serializer and filter helpers shared by the apps' APIs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import django_filters
from django import forms
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers

# The largest id the API accepts: 18 digits, within what a 64-bit id column holds (2**63 - 1)
# and what detail routes match ([0-9]{1,18}); a larger number cannot name a row.
MAX_ID = 10**18 - 1
#: An object id in the OpenAPI schema.
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def finite(value: Any) -> Any:
    """``value`` with every NaN/±inf float (at any depth) replaced by None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


if TYPE_CHECKING:
    _SerializerBase = serializers.BaseSerializer  # what the mixin is mixed into, for super()
else:
    _SerializerBase = object


class FiniteRepresentationMixin(_SerializerBase):
    """For serializers whose metrics may hold NaN or infinity (a diverged candidate, say)."""

    def to_representation(self, instance):
        return finite(super().to_representation(instance))


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
        extend_schema_field(ID_SCHEMA)(self)


def id_path_parameter(description: str = "Id.") -> OpenApiParameter:
    """The ``{id}`` of a detail route, documented as an integer (the route matches 1-18 digits)."""
    return OpenApiParameter("id", ID_SCHEMA, OpenApiParameter.PATH, description=description)
