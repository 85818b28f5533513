from __future__ import annotations

import math
from datetime import datetime

from django.db import models

from events.payloads import BrainStatePayload
from hormones.choices import HormoneName


def decayed_level(*, level: float, baseline: float, half_life_s: float, elapsed_s: float) -> float:
    """Closed-form exponential decay toward the baseline.

    ``baseline + (level - baseline) * 2 ** (-elapsed / half_life)``: computed from
    timestamps, so the result is the same however often (or rarely) it is evaluated.
    """
    if elapsed_s <= 0:
        return level
    return baseline + (level - baseline) * math.pow(2.0, -elapsed_s / half_life_s)


class Hormone(models.Model):
    """A global signal: a level that decays toward its baseline with a half-life.

    ``level`` is the value at ``updated_at``; the current value is always computed with
    ``level_at`` so no periodic tick is needed and none can drift.
    """

    name = models.CharField(max_length=32, choices=HormoneName.choices, unique=True)
    level = models.FloatField()
    baseline = models.FloatField()
    half_life_s = models.FloatField(help_text="Seconds for the distance to the baseline to halve.")
    min_level = models.FloatField(default=0.0)
    max_level = models.FloatField(default=1.0)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(half_life_s__gt=0), name="hormone_half_life_positive"),
            models.CheckConstraint(condition=models.Q(min_level__lte=models.F("max_level")), name="hormone_bounds_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.level:.3f}"

    def level_at(self, when: datetime) -> float:
        elapsed = (when - self.updated_at).total_seconds()
        return decayed_level(level=self.level, baseline=self.baseline, half_life_s=self.half_life_s, elapsed_s=elapsed)

    def clamp(self, value: float) -> float:
        return min(self.max_level, max(self.min_level, value))


class HormoneEvent(models.Model):
    """A release (positive delta) or suppression (negative) of a hormone, with its cause."""

    hormone = models.ForeignKey(Hormone, on_delete=models.CASCADE, related_name="events")
    delta = models.FloatField()
    level_before = models.FloatField()
    level_after = models.FloatField()
    cause = models.CharField(max_length=200)
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["hormone", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.hormone.name} {self.delta:+.3f} ({self.cause})"


class BrainStateSnapshot(models.Model):
    """A periodic snapshot of the system: hormone levels, resources, queue and fleet health.

    Kept as a bounded time series (oldest rows trimmed).
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    hormones = models.JSONField(default=dict)
    cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    memory_used_mb = models.FloatField()
    queue_length = models.PositiveIntegerField(default=0)
    runs_in_flight = models.PositiveIntegerField(default=0)
    fleet_health = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"brain state {self.created_at:%Y-%m-%d %H:%M:%S}"

    def as_dict(self) -> BrainStatePayload:
        payload = BrainStatePayload(
            created_at=self.created_at.isoformat(), hormones=self.hormones, cpu_percent=self.cpu_percent,
            memory_percent=self.memory_percent, memory_used_mb=self.memory_used_mb,
            queue_length=self.queue_length, runs_in_flight=self.runs_in_flight, fleet_health=self.fleet_health,
        )
        if self.extra:
            payload["extra"] = self.extra
        return payload
