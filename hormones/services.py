"""Writes to hormones: one service releases (or suppresses) a hormone."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hormones.choices import HORMONE_DEFAULTS
from hormones.models import Hormone, HormoneEvent
from project.live.publisher import publish


def hormones_ensure() -> list[Hormone]:
    """Create the standard hormones at their baselines if they do not exist yet."""
    now = timezone.now()
    result = []
    for name, (baseline, half_life, lo, hi) in HORMONE_DEFAULTS.items():
        hormone, _ = Hormone.objects.get_or_create(
            name=name,
            defaults={"level": baseline, "baseline": baseline, "half_life_s": half_life,
                      "min_level": lo, "max_level": hi, "updated_at": now},
        )
        result.append(hormone)
    return result


@transaction.atomic
def hormone_release(*, name: str, delta: float, cause: str, context: dict | None = None) -> HormoneEvent:
    """Move a hormone by ``delta`` from its current (decayed) level, clamped to its bounds."""
    if not Hormone.objects.filter(name=name).exists():
        hormones_ensure()
    hormone = Hormone.objects.select_for_update().get(name=name)
    now = timezone.now()
    before = hormone.level_at(now)
    after = hormone.clamp(before + delta)
    hormone.level = after
    hormone.updated_at = now
    hormone.save(update_fields=["level", "updated_at"])
    event = HormoneEvent.objects.create(
        hormone=hormone, delta=after - before, level_before=before, level_after=after,
        cause=cause[:200], context=context or {},
    )
    publish("hormone.changed", {"name": name, "level": after, "delta": after - before, "cause": cause[:200]})
    return event
