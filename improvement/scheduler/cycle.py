"""One cycle of the scheduler: measure → trigger → prioritise → enqueue.

Split into small steps tests can call one by one:

* ``proposals_collect``  — measure each model and ask every strategy whether it applies;
  add drift retraining and, when nothing fires for a model, an exploration proposal;
* ``proposals_predict``  — the learned improvement predictor (``improvement.predictor``)
  predicts each proposal's gain; the neural one only while it beats the baseline "mean gain
  per strategy" on held-out history, and the cycle's notes and every decision say which;
* ``proposals_prioritise`` — priority = urgency × hormone weight × staleness × (1 + predicted
  gain clipped to [−0.5, 1]) (or plain trigger order when ``hormone_driven`` is off: the
  predictions are then recorded but do not reorder anything);
* ``proposals_select``   — skip busy models and cooling-down pairs, take the free slots;
* ``cycle_run``          — all of it under the loop-state lock, so two processes never hand
  out the same free slot, then records the cycle with every decision and its reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import cast

from django.db import transaction
from django.utils import timezone

from events.payloads import CycleFinishedPayload
from events.publisher import publish
from hormones.names import ADRENALINE, SEROTONIN
from hormones.priority import (
    exploration_order,
    exploration_share,
    interval_multiplier,
    model_urgency_boost,
    strategy_weights,
)
from hormones.selectors import hormone_levels_current
from hormones.services import hormone_release
from improvement.choices import IN_FLIGHT, RunOrigin, RunStatus
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.neural_hormones import stress_release
from improvement.predictor import gain_predictions, predictor_maintain, run_features
from improvement.runs.lifecycle import run_create
from improvement.scheduler.genetic_triggers import (
    genetic_trigger_detect,
    genetic_trigger_record,
    genetic_trigger_summary,
)
from improvement.scheduler.triggers import config_triggers, model_metrics, search_progress
from improvement.strategies.registry import (
    NEED_TEACHER,
    ROLE_EVOLVE,
    ROLE_RETRAIN,
    ModelMetrics,
    all_strategies,
    exploration_drives,
    first_with_role,
    strategy_weightings,
)
from models_registry.models import NeuralModel
from models_registry.sealed import deciding
from models_registry.selectors import version_active

logger = logging.getLogger(__name__)

EXPLORATION_URGENCY = 0.2
EXHAUSTED_AFTER = 3  # consecutive rejected runs after which exploration of a model pauses
PREDICTED_GAIN_RANGE = (-0.5, 1.0)  # a prediction can halve a priority or double it, no more


@dataclasses.dataclass
class Proposal:
    model_id: int
    model: str
    strategy: str
    reason: str
    urgency: float
    kind: str = "trigger"  # trigger | exploration | drift | genetic
    priority: float = 0.0
    chosen: bool = False
    why: str = ""
    genetic: tuple[str, dict] | None = None  # (kind, evidence) of the genetic trigger behind it: kept with its run
    predicted_gain: float | None = None
    predictor: str = ""  # which predictor made predicted_gain
    predictor_factor: float = 1.0  # what the prediction multiplied the priority by
    features: dict | None = None  # run_features when predicted; stored on the run it becomes
    bypass_cooldown: bool = False  # a search continuing its study is not held by an earlier rejection
    metrics: ModelMetrics | None = None  # what the trigger saw (for the cycle's hormone releases)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("genetic")
        data.pop("features")
        data.pop("metrics")
        if self.genetic:
            data["genetic_trigger"], data["evidence"] = self.genetic
        return data


# ---------------------------------------------------------------------------------- steps


def _last_finished(model: NeuralModel) -> list[ImprovementRun]:
    return list(ImprovementRun.objects.filter(model=model, finished_at__isnull=False)
                .order_by("-finished_at")[:EXHAUSTED_AFTER])


def _exploration_order(metrics: ModelMetrics, *, config: ImprovementConfig, levels: Mapping[str, float]) -> list[str]:
    """The exploring strategies for a model nothing else serves, first choice first (by hormone drive)."""
    has_teacher = (config.cross_model_distillation and metrics.teacher_score is not None
                   and (metrics.score or 0.0) < metrics.teacher_score)
    strategies = all_strategies()
    drives = {name: hormone for name, hormone in exploration_drives().items()
              if has_teacher or NEED_TEACHER not in strategies[name].needs}
    return exploration_order(levels, drives,
                             learns_from_teacher=[n for n in drives if NEED_TEACHER in strategies[n].needs])


def _exploration(model: NeuralModel, metrics: ModelMetrics, fired: list[Proposal], *, config: ImprovementConfig,
                 levels: Mapping[str, float], now) -> Proposal | None:
    """What a model explores when nothing that fired can run: the search, while it keeps finding better.

    The rule that stops it: a search (a strategy with the evolve role) explores on — past the
    rejection cool-down, since each run continues the model's persistent study — until its last
    ``search_patience_trials`` trials found nothing better than its best; another exploring
    strategy (distillation) is tried when it is not cooling down, and pauses once the model's
    last ``EXHAUSTED_AFTER`` runs were all rejected. The decision says which rule applied.
    """
    strategies = all_strategies()
    why = "no trigger fired" if not fired else "what fired is cooling down"
    headroom = max(0.05, 1.0 - (metrics.score or 0.0))
    urgency = EXPLORATION_URGENCY * (0.5 + headroom)  # the more headroom, the larger the expected gain
    paused: list[str] = []
    for name in _exploration_order(metrics, config=config, levels=levels):
        if ROLE_EVOLVE in strategies[name].roles:
            progress = search_progress(model)
            if progress.stalled(config.search_patience_trials):
                paused.append(f"{name}: no better trial in the last {progress.since_best} (best val "
                              f"{progress.best_score:.4f} at trial {progress.best_trial} of {progress.trials}; "
                              f"patience {config.search_patience_trials})")
                continue
            so_far = (f"{progress.trials} trials so far, {progress.since_best} since the best"
                      if progress.trials else "a new search")
            return Proposal(model.pk, str(model), name, f"{why} (score {metrics.score or 0:.4f}); searching: {so_far}",
                            urgency, kind="exploration", bypass_cooldown=True)
        if _cooling_down(model.pk, name, config.rejection_cooldown_s, now) is not None:
            paused.append(f"{name}: cooling down")
            continue
        recent = _last_finished(model)
        if len(recent) >= EXHAUSTED_AFTER and all(r.status == RunStatus.REJECTED for r in recent):
            paused.append(f"{name}: the last {EXHAUSTED_AFTER} runs gained nothing")
            continue
        return Proposal(model.pk, str(model), name, f"{why} (score {metrics.score or 0:.4f}); exploring", urgency,
                        kind="exploration")
    if not paused:
        return None
    return Proposal(model.pk, str(model), "", "exploration paused: " + "; ".join(paused), 0.0, kind="exploration",
                    why="gains stopped")


def proposals_collect(config: ImprovementConfig, levels: dict[str, float]) -> list[Proposal]:
    triggers = config_triggers(config)
    strategies = all_strategies()
    retrain = first_with_role(ROLE_RETRAIN)
    proposals: list[Proposal] = []
    for model in NeuralModel.objects.select_related("task").order_by("pk"):
        if version_active(model=model) is None:
            continue
        genetic = genetic_trigger_detect(model, config=config)
        metrics = model_metrics(model, genetic_trigger=genetic_trigger_summary(*genetic) if genetic else None)
        fired = []
        for name, strategy in strategies.items():
            verdict = strategy.applies(metrics, triggers)
            if verdict.applies:
                kind = "genetic" if ROLE_EVOLVE in strategy.roles and genetic else "trigger"
                fired.append(Proposal(model.pk, str(model), name, verdict.reason, verdict.urgency, kind=kind,
                                      genetic=genetic if kind == "genetic" else None, metrics=metrics))
        if genetic and genetic[0] == "drift" and retrain is not None:
            # Serving saw the model disagree with the algorithm: retraining jumps the queue.
            boost = model_urgency_boost(levels.get(ADRENALINE, 0.0))
            fired.append(Proposal(model.pk, str(model), retrain, "drift seen by serving: retrain",
                                  min(1.0, 0.9) * boost, kind="drift", genetic=genetic, metrics=metrics))
        now = timezone.now()
        available = [p for p in fired
                     if _cooling_down(p.model_id, p.strategy, config.rejection_cooldown_s, now) is None]
        if not available:
            # Nothing fired, or everything that fired is cooling down: explore, so no slot idles
            # while a model's search still finds better architectures.
            exploration = _exploration(model, metrics, fired, config=config, levels=levels, now=now)
            if exploration is not None:
                fired.append(exploration)
        proposals.extend(fired)
    return proposals


def _staleness(model_id: int, now) -> float:
    last = (ImprovementRun.objects.filter(model_id=model_id).order_by("-created_at")
            .values_list("created_at", flat=True).first())
    if last is None:
        return 2.0
    hours = (now - last).total_seconds() / 3600.0
    return 1.0 + min(1.0, hours)


def proposals_predict(proposals: list[Proposal], *, config: ImprovementConfig, levels: dict[str, float],
                      refreshed: str = "") -> str:
    """Annotate every proposal with its run's predicted gain; returns the note saying which predictor."""
    if not proposals:
        return ""
    models = NeuralModel.objects.select_related("task").in_bulk({p.model_id for p in proposals})
    try:
        for proposal in proposals:
            proposal.features = run_features(model=models[proposal.model_id], strategy=proposal.strategy,
                                             levels=levels)
        # every proposal's features were set just above
        gains, label, note = gain_predictions([cast(dict, p.features) for p in proposals], config=config,
                                              refreshed=refreshed)
    except Exception as exc:  # noqa: BLE001 - a cycle never fails for want of a prediction
        logger.exception("no gain predictions this cycle")
        return f"predictor: unavailable ({type(exc).__name__}: {exc}); priorities without predictions"[:300]
    for proposal, gain in zip(proposals, gains, strict=True):
        proposal.predicted_gain, proposal.predictor = round(gain, 4), label
    if not config.hormone_driven:
        note += " (not applied: hormone_driven is off, plain trigger order)"
    return note


def proposals_prioritise(proposals: list[Proposal], *, hormone_driven: bool, weights: dict[str, float]) -> list[Proposal]:
    """Sorted best first. With hormones: urgency × weight × staleness × (1 + predicted gain); else trigger order."""
    now = timezone.now()
    order = {name: i for i, name in enumerate(all_strategies())}
    kind_rank = {"drift": 0, "trigger": 1, "genetic": 1, "exploration": 2}
    for proposal in proposals:
        weight = weights.get(proposal.strategy, 1.0) if hormone_driven else 1.0
        if hormone_driven and proposal.predicted_gain is not None:
            proposal.predictor_factor = round(1.0 + min(PREDICTED_GAIN_RANGE[1],
                                                        max(PREDICTED_GAIN_RANGE[0], proposal.predicted_gain)), 4)
        proposal.priority = round(proposal.urgency * weight * _staleness(proposal.model_id, now)
                                  * proposal.predictor_factor, 6)
    if hormone_driven:
        return sorted(proposals, key=lambda p: (-p.priority, kind_rank[p.kind], p.model_id))
    return sorted(proposals, key=lambda p: (kind_rank[p.kind], order.get(p.strategy, 99), p.model_id))


def _cooling_down(model_id: int, strategy: str, cooldown_s: float, now, *,
                  bypass_rejection: bool = False) -> ImprovementRun | None:
    """The model's last finished run of ``strategy`` if it holds the strategy back for ``cooldown_s``.

    A rejection holds it (unless ``bypass_rejection``: a search continuing its study); a failure
    always does — a run that fails (a broken version file, an algorithm that raises) would
    otherwise fail again in every freed slot, hundreds of times an hour.
    """
    last = (ImprovementRun.objects.filter(model_id=model_id, strategy=strategy, finished_at__isnull=False)
            .order_by("-finished_at").first())
    if last is None or (now - last.finished_at).total_seconds() >= cooldown_s:
        return None
    if last.status == RunStatus.FAILED or (last.status == RunStatus.REJECTED and not bypass_rejection):
        return last
    return None


def proposals_select(proposals: list[Proposal], *, slots: int, config: ImprovementConfig,
                     levels: dict[str, float]) -> list[Proposal]:
    """Mark the proposals that get a slot; every other one gets the reason it did not."""
    now = timezone.now()
    busy = set(ImprovementRun.objects.filter(status__in=IN_FLIGHT).values_list("model_id", flat=True))
    exploration_cap = max(1, math.ceil(config.max_concurrent_improvements * exploration_share(levels)))
    chosen: list[Proposal] = []
    explorations = 0
    for index, proposal in enumerate(proposals):
        if proposal.why:  # already explained (e.g. exploration paused)
            continue
        if proposal.model_id in busy:
            proposal.why = "a run is already in flight for this model"
            continue
        cooling = _cooling_down(proposal.model_id, proposal.strategy, config.rejection_cooldown_s, now,
                                bypass_rejection=proposal.bypass_cooldown)
        if cooling is not None:
            # _cooling_down returns finished runs only (finished_at__isnull=False)
            until = cast(datetime, cooling.finished_at) + timedelta(seconds=config.rejection_cooldown_s)
            outcome = "failed" if cooling.status == RunStatus.FAILED else "was rejected"
            proposal.why = f"cooling down after run #{cooling.pk} {outcome} (until {until:%H:%M:%S})"
            continue
        if len(chosen) >= slots:
            proposal.why = "no free slot" if slots <= 0 else "lower priority than the runs given the free slots"
            continue
        # The exploration share binds only while a triggered run still waits for a slot: with nothing
        # else to run, exploration may use every free slot rather than leave it idle.
        others_waiting = any(p.kind != "exploration" and not p.why and p.model_id not in busy
                             for p in proposals[index + 1:])
        if proposal.kind == "exploration" and explorations >= exploration_cap and others_waiting:
            proposal.why = "exploration share of the slots used"
            continue
        proposal.chosen = True
        proposal.why = "chosen"
        explorations += proposal.kind == "exploration"
        busy.add(proposal.model_id)
        chosen.append(proposal)
    return chosen


def cycle_signals(proposals: list[Proposal]) -> None:
    """Hormone releases the cycle's measurements call for (small, so they accumulate).

    Each strategy whose trigger fired declares its release (``Strategy.fired_release``); a
    stress release is sized by the hormone-response model (``improvement.neural_hormones``).
    A cycle where no trigger fired is calm: serotonin.
    """
    fired: dict[str, list[ModelMetrics]] = {}
    for p in proposals:
        if p.kind in ("trigger", "genetic") and p.metrics is not None:
            fired.setdefault(p.strategy, []).append(p.metrics)
    strategies = all_strategies()
    for name, metrics in fired.items():
        release = strategies[name].fired_release(metrics) if name in strategies else None
        if release is None:
            continue
        if release.stress_event:
            stress_release(event=release.stress_event, severity=release.severity, persistence=release.persistence,
                           cause=release.cause)
        else:
            hormone_release(name=release.hormone, delta=release.delta, cause=release.cause)
    if not fired:
        hormone_release(name=SEROTONIN, delta=0.05, cause="calm cycle: no trigger fired")


# ----------------------------------------------------------------------------------- cycle


def effective_interval_s(config: ImprovementConfig, levels: Mapping[str, float] | None = None) -> float:
    """The period of scheduled cycles: ``improvement_interval``, stretched by serotonin above its baseline.

    ``improvement_interval × (1 + 2·max(0, serotonin − baseline))`` when the loop is hormone-driven
    (at most 2×; exactly the configured interval while serotonin is at rest), else the interval.
    """
    if not config.hormone_driven:
        return config.improvement_interval
    return config.improvement_interval * interval_multiplier(levels if levels is not None else hormone_levels_current())


def cycle_run(*, trigger: str) -> CycleRecord:
    """One cycle. A scheduled, forced or boot cycle sets when the next scheduled one is due
    (its own start + ``effective_interval_s``); a cycle that fills a freed slot leaves that alone.

    Every choice in it is a decision on gate scores: the sealed test split cannot be read inside.
    """
    started = time.perf_counter()
    config = ImprovementConfig.load()
    levels = hormone_levels_current()
    strategies = all_strategies()
    weights = (strategy_weights(levels, strategy_weightings()) if config.hormone_driven
               else {name: 1.0 for name in strategies})
    refreshed = predictor_maintain(config=config)  # data upkeep, before any decision
    with deciding("cycle"):
        record, ordered = _cycle_decide(trigger, config, levels, weights, refreshed, started)
    cycle_signals(ordered)
    return record


def _cycle_decide(trigger: str, config: ImprovementConfig, levels: dict[str, float], weights: dict[str, float],
                  refreshed: str, started: float) -> tuple[CycleRecord, list[Proposal]]:
    strategies = all_strategies()
    proposals = proposals_collect(config, levels)
    notes: list[str] = [note for note in [proposals_predict(proposals, config=config, levels=levels,
                                                             refreshed=refreshed)] if note]
    ordered = proposals_prioritise(proposals, hormone_driven=config.hormone_driven, weights=weights)
    with transaction.atomic():
        state = LoopState.objects.select_for_update().get_or_create(pk=1)[0]
        in_flight = ImprovementRun.objects.filter(status__in=IN_FLIGHT).count()
        slots = max(0, config.max_concurrent_improvements - in_flight)
        chosen = proposals_select(ordered, slots=slots, config=config, levels=levels)
        for proposal in chosen:
            model = NeuralModel.objects.get(pk=proposal.model_id)
            params = strategies[proposal.strategy].run_params(levels) if config.hormone_driven else {}
            run = run_create(model=model, strategy=proposal.strategy, origin=RunOrigin.LOOP,
                             trigger_reason=f"[{proposal.kind}] {proposal.reason}", priority=proposal.priority,
                             params=params, features=proposal.features)
            if proposal.genetic:
                genetic_trigger_record(model=model, kind=proposal.genetic[0], evidence=proposal.genetic[1], run=run)
        now = timezone.now()
        record = CycleRecord.objects.create(
            trigger=trigger, in_flight_before=in_flight, slots=slots, enqueued=len(chosen),
            hormone_driven=config.hormone_driven, hormone_levels=levels, weights=weights,
            decisions=[p.as_dict() for p in ordered], notes=notes,
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )
        state.last_cycle_at = now
        state.cycles += 1
        if trigger != CycleRecord.Trigger.SLOT_FREED:
            state.next_cycle_at = now + timedelta(seconds=effective_interval_s(config, levels))
        state.save()
        publish("cycle.finished", CycleFinishedPayload(
            cycle_id=record.pk, trigger=trigger, enqueued=len(chosen), slots=slots,
            next_cycle_at=state.next_cycle_at.isoformat() if state.next_cycle_at else None,
        ))
    return record, ordered


def cycles_trim(*, keep: int = 500) -> int:
    cutoff = CycleRecord.objects.order_by("-id").values_list("id", flat=True)[keep:keep + 1]
    if not cutoff:
        return 0
    deleted, _ = CycleRecord.objects.filter(id__lte=cutoff[0]).delete()
    return deleted
