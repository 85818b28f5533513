"""Writes to hormones: one service releases (or suppresses) a hormone."""

from __future__ import annotations

import psutil
from django.db import transaction
from django.utils import timezone

from events.payloads import HormonePayload
from events.publisher import publish
from hormones.choices import HORMONE_DEFAULTS
from hormones.models import BrainStateSnapshot, Hormone, HormoneEvent
from hormones.selectors import hormone_levels_current


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
    publish("hormone.changed", HormonePayload(name=name, level=after, delta=after - before, cause=cause[:200]))
    return event


def brain_state_snapshot(
    *, queue_length: int, runs_in_flight: int, fleet_health: float | None, extra: dict | None = None,
    keep: int = 2000,
) -> BrainStateSnapshot:
    """Record a brain-state snapshot and trim the series to ``keep`` rows."""
    memory = psutil.virtual_memory()
    snapshot = BrainStateSnapshot.objects.create(
        hormones=hormone_levels_current(), cpu_percent=psutil.cpu_percent(interval=None),
        memory_percent=memory.percent, memory_used_mb=(memory.total - memory.available) / 2**20,
        queue_length=queue_length, runs_in_flight=runs_in_flight, fleet_health=fleet_health, extra=extra or {},
    )
    cutoff = BrainStateSnapshot.objects.order_by("-id").values_list("id", flat=True)[keep:keep + 1]
    if cutoff:
        BrainStateSnapshot.objects.filter(id__lte=cutoff[0]).delete()
    publish("brain.state", snapshot.as_dict())
    return snapshot
