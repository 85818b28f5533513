"""Reads of hormone state."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from django.utils import timezone

from hormones.choices import HORMONE_DEFAULTS
from hormones.models import BrainStateSnapshot, Hormone


def hormone_levels_current(*, at: datetime | None = None) -> dict[str, float]:
    """Current level of every hormone (baseline for one not yet created)."""
    when = at or timezone.now()
    levels = {name: spec[0] for name, spec in HORMONE_DEFAULTS.items()}
    for hormone in Hormone.objects.all():
        levels[hormone.name] = hormone.level_at(when)
    return levels


def brain_state_latest() -> dict | None:
    snapshot = BrainStateSnapshot.objects.order_by("-created_at", "-id").first()
    return cast(dict, snapshot.as_dict()) if snapshot else None  # a BrainStatePayload is a plain dict


def brain_state_history(*, limit: int = 500) -> list[dict]:
    rows = BrainStateSnapshot.objects.order_by("-created_at", "-id")[:limit]
    return [cast(dict, row.as_dict()) for row in reversed(list(rows))]  # a BrainStatePayload is a plain dict
