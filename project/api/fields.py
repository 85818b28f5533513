"""Serializer helpers shared by the apps' APIs."""

from __future__ import annotations

import math
from typing import Any


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
