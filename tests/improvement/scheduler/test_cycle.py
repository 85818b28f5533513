"""The scheduler cycle: triggers, priorities, slots, cool-downs, exploration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hormones.priority import strategy_weights
from hormones.selectors import hormone_levels_current
from hormones.services import hormone_release, hormones_ensure
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.scheduler.cycle import cycle_run, proposals_collect, proposals_prioritise
from improvement.strategies.registry import strategy_weightings
from models_registry.models import PerformanceSample
from models_registry.services import model_create
from tests.factories import csv_task, version_with_score

pytestmark = pytest.mark.django_db


@pytest.fixture
def task():
    t = csv_task()
    # Algorithmic baseline 0.80: below the distillation teacher threshold, so it stays quiet.
    PerformanceSample.objects.create(task=t, implementation="algorithmic", score=0.80, metric="accuracy",
                                     split="gate")
    return t


@pytest.fixture(autouse=True)
def _setup():
    hormones_ensure()
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"max_concurrent_improvements": 3})


def _model(task, name, score, latency=1.0):
    model = model_create(task=task, name=name)
    version_with_score(model, score, latency_ms=latency)
    return model


def _chosen(record):
    return {(d["model"].split("/")[1], d["strategy"]) for d in record.decisions if d["chosen"]}


def test_cycle_picks_the_right_strategies_for_given_metrics(task):
    ImprovementConfig.objects.filter(pk=1).update(cross_model_distillation=False)
    _model(task, "weak", 0.5)
    _model(task, "middling", 0.8)
    _model(task, "slow", 0.95, latency=500.0)
    record = cycle_run(trigger="forced")
    assert _chosen(record) == {("weak", "training"), ("middling", "architecture"), ("slow", "optimization")}
    runs = ImprovementRun.objects.all()
    assert runs.count() == 3 and {r.status for r in runs} == {RunStatus.QUEUED}
    assert all(r.trigger_reason for r in runs)


def test_free_slots_bound_what_is_enqueued(task):
    ImprovementConfig.objects.filter(pk=1).update(max_concurrent_improvements=2)
    busy = _model(task, "busy", 0.5)
    ImprovementRun.objects.create(model=busy, strategy="training", status=RunStatus.RUNNING)
    for i in range(3):
        _model(task, f"weak{i}", 0.5)
    record = cycle_run(trigger="forced")
    assert record.in_flight_before == 1 and record.slots == 1 and record.enqueued == 1
    reasons = {d["why"] for d in record.decisions if not d["chosen"]}
    assert "a run is already in flight for this model" in reasons
    assert any("free slot" in r for r in reasons)
    assert ImprovementRun.objects.filter(status__in=["queued", "running"]).count() == 2
    # A second cycle at once finds no slot at all.
    assert cycle_run(trigger="forced").enqueued == 0


def test_a_rejected_strategy_cools_down(task):
    model = _model(task, "weak", 0.5)
    ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.REJECTED,
                                  finished_at=timezone.now() - timedelta(seconds=10))
    record = cycle_run(trigger="forced")
    decision = next(d for d in record.decisions if d["strategy"] == "training")
    assert not decision["chosen"] and "cooling down" in decision["why"]
    ImprovementRun.objects.filter(status=RunStatus.QUEUED).delete()  # the exploration run it chose instead
    ImprovementRun.objects.update(finished_at=timezone.now() - timedelta(hours=2))
    assert _chosen(cycle_run(trigger="forced")) == {("weak", "training")}


def test_without_hormones_the_order_is_the_trigger_order(task):
    _model(task, "a-arch", 0.8)
    _model(task, "b-train", 0.5)
    ImprovementConfig.objects.filter(pk=1).update(hormone_driven=False)
    config = ImprovementConfig.load()
    ordered = proposals_prioritise(proposals_collect(config, {}), hormone_driven=False, weights={})
    assert [p.strategy for p in ordered] == ["training", "architecture"]


def test_raising_cortisol_moves_optimization_ahead_of_architecture(task):
    _model(task, "slowmid", 0.8, latency=210.0)  # fires both optimization and architecture
    config = ImprovementConfig.load()

    def order():
        levels = hormone_levels_current()
        props = proposals_prioritise(proposals_collect(config, levels), hormone_driven=True,
                                     weights=strategy_weights(levels, strategy_weightings()))
        return [p.strategy for p in props]

    hormone_release(name="dopamine", delta=0.7, cause="test: reward")
    assert order()[0] == "architecture"
    hormone_release(name="cortisol", delta=0.8, cause="test: stress")
    assert order()[0] == "optimization"


def test_a_good_model_is_explored_when_no_trigger_fires(task):
    _model(task, "good", 0.95)
    record = cycle_run(trigger="forced")
    (decision,) = record.decisions
    assert decision["kind"] == "exploration" and decision["chosen"]
    assert decision["strategy"] in ("architecture", "distillation")


def _search(model, scores, *, minutes_ago=180):
    run = ImprovementRun.objects.create(model=model, strategy="architecture", status=RunStatus.REJECTED,
                                        finished_at=timezone.now() - timedelta(minutes=minutes_ago))
    for i, score in enumerate(scores):
        SearchCandidate.objects.create(run=run, generation=0, index=i, genome={}, status="done", score=score,
                                       trial_number=i)
    return run


def test_exploration_pauses_when_the_search_stops_finding_better(task):
    ImprovementConfig.objects.filter(pk=1).update(search_patience_trials=10)
    model = _model(task, "good", 0.95)
    _search(model, [0.80, 0.91] + [0.85] * 10)  # the best was trial 2; 10 trials since found nothing better
    record = cycle_run(trigger="forced")
    (decision,) = record.decisions
    assert not decision["chosen"] and decision["why"] == "gains stopped"
    assert "no better trial in the last 10 (best val 0.9100 at trial 2 of 12; patience 10)" in decision["reason"]


def test_a_search_that_still_improves_explores_past_the_cooldown(task):
    """Every trigger is quiet or cooling down and a slot is free: the model's search goes on."""
    ImprovementConfig.objects.filter(pk=1).update(search_patience_trials=10, rejection_cooldown_s=3600)
    model = _model(task, "good", 0.95)
    _search(model, [0.80, 0.85, 0.91], minutes_ago=1)  # rejected a minute ago, still improving
    record = cycle_run(trigger="forced")
    (decision,) = [d for d in record.decisions if d["strategy"] == "architecture"]
    assert decision["chosen"] and decision["kind"] == "exploration"
    assert "searching: 3 trials so far, 0 since the best" in decision["reason"]


def test_with_nothing_else_to_run_exploration_fills_every_free_slot(task):
    """The exploration share limits exploration only while triggered runs wait for slots."""
    for name in ("a", "b", "c"):
        _model(task, name, 0.95)
    hormone_release(name="cortisol", delta=0.8, cause="test: stress")  # share 0.3 − 0.3·cortisol: one slot of three
    record = cycle_run(trigger="forced")
    assert {m for m, s in _chosen(record)} == {"a", "b", "c"}
    assert all(d["kind"] == "exploration" for d in record.decisions if d["chosen"])


def test_plateau_fires_a_genetic_trigger(task):
    model = _model(task, "plateaued", 0.9)
    for gain in (0.01, 0.02, 0.0):
        ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.REJECTED, gain=gain,
                                      finished_at=timezone.now() - timedelta(hours=3))
    record = cycle_run(trigger="forced")
    chosen = [d for d in record.decisions if d["chosen"]]
    assert chosen and chosen[0]["strategy"] == "architecture" and chosen[0]["kind"] == "genetic"
    assert model.genetic_triggers.get().kind == "plateau"


def test_no_plateau_without_one(task):
    model = _model(task, "fine", 0.9)
    for gain in (0.01, 0.5, 0.0):
        ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.PROMOTED, gain=gain,
                                      finished_at=timezone.now() - timedelta(hours=3))
    cycle_run(trigger="forced")
    assert not model.genetic_triggers.exists()


def test_a_strong_model_teaches_the_weaker_one(task):
    _model(task, "teacher", 0.97)
    _model(task, "student", 0.9)
    record = cycle_run(trigger="forced")
    assert ("student", "distillation") in _chosen(record)


def test_exploration_steps_in_when_what_fired_is_cooling_down(task):
    _model(task, "teacher", 0.97)
    student = _model(task, "student", 0.9)  # distillation fires (teacher 0.97 ≥ 0.85)
    ImprovementRun.objects.create(model=student, strategy="distillation", status=RunStatus.REJECTED,
                                  finished_at=timezone.now() - timedelta(seconds=10))
    record = cycle_run(trigger="forced")
    chosen = [d for d in record.decisions if d["chosen"] and d["model"].endswith("/student")]
    assert len(chosen) == 1 and chosen[0]["kind"] == "exploration" and chosen[0]["strategy"] == "architecture"


def test_a_failed_strategy_cools_down_even_as_an_exploration(task):
    """A run that fails (a broken version file, an algorithm that raises) is not retried in every
    freed slot: the strategy cools down on that model, exploration included."""
    ImprovementConfig.objects.filter(pk=1).update(search_patience_trials=10, rejection_cooldown_s=3600)
    weak = _model(task, "weak", 0.5)
    good = _model(task, "good", 0.95)
    ImprovementRun.objects.create(model=weak, strategy="training", status=RunStatus.FAILED,
                                  finished_at=timezone.now() - timedelta(seconds=10), error="WeightsError: ...")
    failed = _search(good, [0.80, 0.85, 0.91], minutes_ago=1)  # a search that still improves...
    ImprovementRun.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)  # ...but its last run failed
    record = cycle_run(trigger="forced")
    training = next(d for d in record.decisions if d["strategy"] == "training")
    assert not training["chosen"] and "failed" in training["why"]
    assert not any(d["chosen"] for d in record.decisions if d["model"].endswith("/good")), record.decisions
    ImprovementRun.objects.filter(status=RunStatus.QUEUED).delete()
    ImprovementRun.objects.update(finished_at=timezone.now() - timedelta(hours=2))
    assert ("weak", "training") in _chosen(cycle_run(trigger="forced"))
