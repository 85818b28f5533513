"""Hormones: exact decay from timestamps, releases with causes, the priority mapping."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from hormones.models import Hormone, HormoneEvent, decayed_level
from hormones.priority import (
    HormoneWeighting,
    exploration_order,
    exploration_share,
    interval_multiplier,
    latency_severity,
    model_urgency_boost,
    resource_severity,
    search_breadth,
    strategy_weights,
)
from hormones.selectors import hormone_levels_current
from hormones.services import hormone_release, hormones_ensure
from improvement.strategies.registry import strategy_weightings

BASE = {"dopamine": 0.3, "cortisol": 0.2, "adrenaline": 0.1, "serotonin": 0.5, "oxytocin": 0.2}


@pytest.mark.parametrize("elapsed", [0.0, 1.0, 17.3, 600.0, 1800.0, 7200.5, 86400.0])
def test_decay_matches_the_closed_form(elapsed):
    expected = 0.3 + (0.9 - 0.3) * math.exp(-math.log(2) * elapsed / 1800.0)
    assert decayed_level(level=0.9, baseline=0.3, half_life_s=1800.0, elapsed_s=elapsed) == pytest.approx(expected)


def test_decay_is_the_same_however_often_it_is_evaluated():
    # Evaluating in 10 small steps (re-basing each time) equals one evaluation over the whole span.
    level = 0.9
    for _ in range(10):
        level = decayed_level(level=level, baseline=0.3, half_life_s=1800.0, elapsed_s=360.0)
    assert level == pytest.approx(decayed_level(level=0.9, baseline=0.3, half_life_s=1800.0, elapsed_s=3600.0))


@pytest.mark.django_db
def test_level_at_arbitrary_timestamps():
    hormones_ensure()
    hormone = Hormone.objects.get(name="dopamine")
    start = timezone.now()
    Hormone.objects.filter(pk=hormone.pk).update(level=1.0, updated_at=start)
    hormone.refresh_from_db()
    for seconds in (0, 900, 1800, 5400):
        assert hormone.level_at(start + timedelta(seconds=seconds)) == pytest.approx(
            hormone.baseline + (1.0 - hormone.baseline) * 0.5 ** (seconds / hormone.half_life_s))


@pytest.mark.django_db
def test_release_moves_the_current_level_clamps_and_records_the_cause():
    hormones_ensure()
    event = hormone_release(name="cortisol", delta=0.5, cause="latency over budget")
    assert event.level_before == pytest.approx(0.2, abs=1e-3)
    assert event.level_after == pytest.approx(0.7, abs=1e-3)
    event = hormone_release(name="cortisol", delta=5.0, cause="failed run")
    assert event.level_after == 1.0 and event.delta == pytest.approx(1.0 - event.level_before)
    assert list(HormoneEvent.objects.values_list("cause", flat=True)) == ["failed run", "latency over budget"]
    assert hormone_levels_current()["cortisol"] == pytest.approx(1.0, abs=1e-3)


def _weights(levels):
    return strategy_weights(levels, strategy_weightings())


def _order(levels):
    weights = _weights(levels)
    return sorted(weights, key=weights.get, reverse=True)


def test_a_weighting_raises_and_damps_by_the_documented_formula():
    weighting = HormoneWeighting(raised_by={"dopamine": 1.0, "oxytocin": 0.5}, damped_by={"cortisol": 0.6})
    levels = {"dopamine": 0.4, "oxytocin": 0.2, "cortisol": 0.5}
    assert weighting.weight(levels) == pytest.approx((1 + 0.4 + 0.5 * 0.2) * (1 - 0.6 * 0.5))
    assert HormoneWeighting().weight(levels) == 1.0
    # Levels outside [0, 1] are clipped.
    assert weighting.weight({"dopamine": 5.0, "cortisol": -1.0}) == pytest.approx(2.0)


def test_each_hormone_moves_priorities_the_documented_way():
    base = _weights(BASE)
    assert _weights({**BASE, "adrenaline": 1.0})["training"] > base["training"]
    assert _weights({**BASE, "cortisol": 1.0})["optimization"] > base["optimization"]
    assert _weights({**BASE, "cortisol": 1.0})["architecture"] < base["architecture"]
    assert _weights({**BASE, "dopamine": 1.0})["architecture"] > base["architecture"]
    assert _weights({**BASE, "oxytocin": 1.0})["distillation"] > base["distillation"]
    # Stress puts optimization ahead of architecture for the same urgency.
    stressed = _weights({**BASE, "cortisol": 0.9})
    assert stressed["optimization"] > stressed["architecture"]
    assert _order({**BASE, "adrenaline": 1.0})[0] == "training"
    assert _order({**BASE, "oxytocin": 1.0})[0] == "distillation"


def test_other_hormone_effects():
    assert search_breadth({"dopamine": 1.0}) > search_breadth({"dopamine": 0.0})
    assert exploration_share({"dopamine": 1.0}) > exploration_share({"dopamine": 0.0})
    assert exploration_share({"cortisol": 1.0, "dopamine": 0.0}) == 0.1
    # Serotonin stretches the cycle period only above its baseline (0.5), up to 2x.
    assert interval_multiplier({"serotonin": 1.0}) == 2.0
    assert interval_multiplier({"serotonin": 0.5}) == 1.0 and interval_multiplier({"serotonin": 0.2}) == 1.0
    assert interval_multiplier({"serotonin": 0.75}) == pytest.approx(1.5)
    assert model_urgency_boost(1.0) == 4.0
    drives = {"architecture": "dopamine", "distillation": "oxytocin"}
    assert exploration_order({"oxytocin": 0.8, "dopamine": 0.2}, drives)[0] == "distillation"
    assert exploration_order({"oxytocin": 0.2, "dopamine": 0.8}, drives)[0] == "architecture"
    # A tie goes to the strategy that learns from a teacher.
    assert exploration_order({"oxytocin": 0.3, "dopamine": 0.3}, drives,
                             learns_from_teacher=["distillation"]) == ["distillation", "architecture"]
    assert latency_severity(200.0, 200.0) == 0.0 and latency_severity(800.0, 200.0) == 1.0
    assert resource_severity(95.0, 10.0) == pytest.approx(0.5)
