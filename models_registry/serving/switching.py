"""Dynamic switching between the neural and the algorithmic implementation of a task.

* ``serving_decide`` — the rule, a pure function over measurements.
* ``serving_switch`` — the ONE service that changes a task's ``ServingState``; it records a
  ``ServingSwitch`` with its reason and evidence and publishes ``serving.switched``.
* ``serving_reevaluate`` — gathers the latest held-out evaluation samples and live scores and
  applies the rule; called when a version is activated (``version_activate`` on commit), after
  feedback is recorded (``serving_reevaluate_after_feedback``) and on demand.

The rule (floor = algorithmic score − tolerance)::

    serve neural  if  score_n > score_a            and p95_n ≤ latency budget   "neural_better"
              or  if  score_n ≥ floor              and p50_n < p50_a            "neural_faster_within_floor"
    otherwise the algorithm: "below_floor" (score_n < floor) or "neural_slower".

Live feedback comes first once there is enough of it (``PLASTICITY_FEEDBACK_MIN_COUNT`` reports
of the neural version in the window, ``serving.feedback``). The algorithm's level is its live
score's lower 95 % bound when it has enough feedback too, else its held-out score::

    the algorithm  if  high_n < level_a − tolerance                             "live_below_floor"
    neural         if  low_n > high_a (+ margin) and p95_n ≤ budget (both live)  "live_better"

where low/high are the 95 % interval of a live score. Anything in between is not conclusive
and the held-out rule decides. Live evidence below the floor is urgent like a held-out one.

Hysteresis: while the algorithm serves, neural must win with a margin — its score higher by
``score_margin`` than each threshold above and its latency better by ``latency_margin``
(relative) — while neural keeps serving on the plain thresholds. Measurements wobbling
inside the margin band therefore never flip serving back and forth, and neural never keeps
serving below the floor. Dwell: after a switch, no automatic switch happens for
``min_dwell_s`` seconds — except leaving neural because it fell below the floor (safety
beats stability); shadow disagreement and operators switch at once through
``serving_switch`` directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from events.payloads import ServingSwitchedPayload
from events.publisher import publish
from models_registry.choices import Implementation
from models_registry.errors import RegistryError
from models_registry.models import ModelVersion, Task
from models_registry.sealed import deciding
from models_registry.selectors import algorithm_latest_sample, version_best_in_task, version_latest_sample
from models_registry.serving.choices import SwitchReason
from models_registry.serving.conf import serving_setting
from models_registry.serving.feedback import LiveScore, feedback_live_score
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.router import serving_router_invalidate

logger = logging.getLogger(__name__)

NEURAL = Implementation.NEURAL.value
ALGORITHMIC = Implementation.ALGORITHMIC.value


# ------------------------------------------------------------------------------ the rule


@dataclasses.dataclass(frozen=True)
class ServingMeasurements:
    """What the rule looks at; latencies are held-out, at batch 1, in milliseconds."""

    neural_score: float | None = None
    algorithmic_score: float | None = None
    neural_latency_ms: float | None = None  # p50, compared with the algorithm's
    algorithmic_latency_ms: float | None = None  # p50
    neural_latency_p95_ms: float | None = None  # checked against the budget
    latency_budget_ms: float = 200.0
    tolerance: float = 0.02
    has_neural: bool = True
    has_algorithm: bool = True
    neural_version_id: int | None = None
    # Live feedback (serving.feedback): the task's metric on recent reports, with its 95 % interval.
    neural_live: LiveScore | None = None
    algorithmic_live: LiveScore | None = None
    live_min_count: int = 30

    @property
    def floor(self) -> float | None:
        return None if self.algorithmic_score is None else self.algorithmic_score - self.tolerance

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "floor": self.floor}


@dataclasses.dataclass(frozen=True)
class SwitchPolicy:
    score_margin: float = 0.01
    latency_margin: float = 0.10
    min_dwell_s: float = 60.0

    @classmethod
    def from_state(cls, state: ServingState | None) -> SwitchPolicy:
        margin = serving_setting("PLASTICITY_SERVING_LATENCY_MARGIN")
        if state is None:
            return cls(score_margin=serving_setting("PLASTICITY_SERVING_HYSTERESIS"), latency_margin=margin,
                       min_dwell_s=serving_setting("PLASTICITY_SERVING_MIN_DWELL_S"))
        return cls(score_margin=state.hysteresis, latency_margin=margin, min_dwell_s=state.min_dwell_s)


@dataclasses.dataclass(frozen=True)
class ServingDecision:
    implementation: str
    reason: str  # the SwitchReason of the rule that chose ``implementation``
    detail: str
    switch: bool  # whether ``implementation`` differs from the current one
    held: bool = False  # a switch was due but the dwell time held it back
    evidence: dict = dataclasses.field(default_factory=dict)


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}"


def _rule(m: ServingMeasurements, *, entering: bool, policy: SwitchPolicy) -> tuple[str, str]:
    """(implementation, reason) by the thresholds; ``entering``: neural must win with a margin."""
    ns, sa = m.neural_score, m.algorithmic_score
    if ns is None or sa is None:  # serving_decide asks only when both scores are known
        raise ValueError("_rule needs both the neural and the algorithmic score")
    sm = policy.score_margin if entering else 0.0
    lm = policy.latency_margin if entering else 0.0
    floor = sa - m.tolerance
    p95 = m.neural_latency_p95_ms
    within_budget = p95 is not None and p95 <= m.latency_budget_ms * (1.0 - lm)
    faster = (m.neural_latency_ms is not None and m.algorithmic_latency_ms is not None
              and m.neural_latency_ms < m.algorithmic_latency_ms * (1.0 - lm))
    if ns > sa + sm and within_budget:
        return NEURAL, SwitchReason.NEURAL_BETTER
    if ns >= floor + sm and faster:
        return NEURAL, SwitchReason.NEURAL_FASTER_WITHIN_FLOOR
    if ns < floor:
        return ALGORITHMIC, SwitchReason.BELOW_FLOOR
    return ALGORITHMIC, SwitchReason.NEURAL_SLOWER


def _live_rule(m: ServingMeasurements, *, entering: bool, policy: SwitchPolicy) -> tuple[str, str, str] | None:
    """(implementation, reason, detail) when live feedback is conclusive, else None (the held-out rule decides)."""
    nl = m.neural_live
    if nl is None or nl.n < m.live_min_count:
        return None
    al = m.algorithmic_live if m.algorithmic_live is not None and m.algorithmic_live.n >= m.live_min_count else None
    level = al.low if al is not None else m.algorithmic_score
    if level is None:
        return None
    floor = level - m.tolerance
    source = (f"the algorithm's live {al.score:.4f} [{al.low:.4f}, {al.high:.4f}] over {al.n} reports"
              if al is not None else f"the algorithm's held-out {level:.4f}")
    neural = f"neural live {nl.metric} {nl.score:.4f} [{nl.low:.4f}, {nl.high:.4f}] over {nl.n} reports"
    if nl.high < floor:
        return ALGORITHMIC, SwitchReason.LIVE_BELOW_FLOOR, f"{neural} < floor {floor:.4f} ({source} − tolerance)"
    p95 = m.neural_latency_p95_ms
    within_budget = p95 is not None and p95 <= m.latency_budget_ms * (1.0 - (policy.latency_margin if entering else 0.0))
    margin = policy.score_margin if entering else 0.0
    if al is not None and nl.low > al.high + margin and within_budget:
        return NEURAL, SwitchReason.LIVE_BETTER, f"{neural} > {source}; p95 {_ms(p95)} ms within the budget"
    return None


def serving_decide(
    *, measurements: ServingMeasurements, current: str | None, seconds_since_switch: float | None,
    policy: SwitchPolicy | None = None,
) -> ServingDecision:
    """Which implementation should serve, given the measurements and the current state. Pure.

    ``current`` is None for a task's first decision (no dwell applies then).
    """
    m = measurements
    policy = policy or SwitchPolicy()
    evidence = {**m.as_dict(), "current": current, "seconds_since_switch": seconds_since_switch,
                "policy": dataclasses.asdict(policy)}
    target: str
    reason: str
    detail: str
    if not m.has_neural and not m.has_algorithm:
        return ServingDecision(current or ALGORITHMIC, SwitchReason.NO_NEURAL, "nothing can serve", False,
                               evidence=evidence)
    if not m.has_neural:
        target, reason, detail = ALGORITHMIC, SwitchReason.NO_NEURAL, "no active neural version"
    elif not m.has_algorithm:
        target, reason, detail = NEURAL, SwitchReason.NO_ALGORITHM, "the task has no algorithmic implementation"
    elif (live := _live_rule(m, entering=current != NEURAL, policy=policy)) is not None:
        target, reason, detail = live
    elif m.neural_score is None or m.algorithmic_score is None:
        missing = "neural" if m.neural_score is None else "algorithmic"
        target = current or ALGORITHMIC
        return ServingDecision(target, SwitchReason.INSUFFICIENT_EVIDENCE,
                               f"no held-out {missing} score yet; serving stays {target}", False, evidence=evidence)
    else:
        target, reason = _rule(m, entering=current != NEURAL, policy=policy)
        detail = (f"neural {m.neural_score:.4f} vs algorithmic {m.algorithmic_score:.4f} (floor {m.floor:.4f}); "
                  f"p50 {_ms(m.neural_latency_ms)} vs {_ms(m.algorithmic_latency_ms)} ms; neural p95 "
                  f"{_ms(m.neural_latency_p95_ms)} ms, budget {m.latency_budget_ms:g} ms")
    switch = current is not None and target != current
    if (switch and current is not None  # switch implies a current implementation
            and seconds_since_switch is not None and seconds_since_switch < policy.min_dwell_s):
        urgent = current == NEURAL and reason in (SwitchReason.BELOW_FLOOR, SwitchReason.LIVE_BELOW_FLOOR)
        if not urgent:
            return ServingDecision(
                current, reason, f"{detail}; switch to {target} held: {seconds_since_switch:.0f} s since the last "
                                 f"switch < dwell {policy.min_dwell_s:g} s", False, held=True, evidence=evidence)
    return ServingDecision(target, reason, detail, switch or current is None, evidence=evidence)


# ------------------------------------------------------------------------------ reads


def serving_measurements(*, task: Task, version: ModelVersion | None,
                         state: ServingState | None = None) -> ServingMeasurements:
    """The latest held-out measurements of ``version`` and of the task's algorithm, and their live scores."""
    algo = algorithm_latest_sample(task=task)
    neural = version_latest_sample(version=version) if version is not None else None

    def pick(sample_value, version_value):
        return sample_value if sample_value is not None else version_value

    tolerance = state.effective_tolerance() if state is not None else task.score_tolerance
    return ServingMeasurements(
        neural_score=pick(neural and neural.score, version and version.score),
        algorithmic_score=algo.score if algo else None,
        neural_latency_ms=pick(neural and neural.latency_p50_ms, version and version.latency_p50_ms),
        algorithmic_latency_ms=algo.latency_p50_ms if algo else None,
        neural_latency_p95_ms=pick(neural and neural.latency_p95_ms, version and version.latency_p95_ms),
        latency_budget_ms=task.latency_budget_ms, tolerance=tolerance, has_neural=version is not None,
        has_algorithm=bool(task.algorithm_path), neural_version_id=version.pk if version is not None else None,
        neural_live=(feedback_live_score(task=task, implementation=NEURAL, version_id=version.pk)
                     if version is not None else None),
        algorithmic_live=(feedback_live_score(task=task, implementation=ALGORITHMIC, version_id=None)
                          if task.algorithm_path else None),
        live_min_count=serving_setting("PLASTICITY_FEEDBACK_MIN_COUNT"),
    )


# ------------------------------------------------------------------------------ writes


def _state_for_update(task: Task) -> ServingState | None:
    return ServingState.objects.select_for_update(of=("self",)).select_related("version").filter(task=task).first()


def serving_switch(
    *, task: Task, implementation: str, version: ModelVersion | None = None, reason: str, detail: str = "",
    evidence: dict | None = None, actor: str = "", pinned: bool | None = None,
) -> ServingSwitch | None:
    """Make ``implementation`` (and ``version``, for neural) serve ``task``; the one place this changes.

    Records a ``ServingSwitch`` and publishes ``serving.switched`` when the implementation or
    the neural version changes; returns None (recording nothing) when they are already so.
    ``pinned`` (operators) sets or clears the pin; None leaves it. Every serving process
    picks the change up within ``PLASTICITY_SERVING_REFRESH_S``; this one at once.
    """
    if implementation == NEURAL:
        if version is None:
            raise RegistryError("version: serving the neural implementation needs an active version of the task")
        if version.model.task_id != task.pk:
            raise RegistryError(f"version: {version} does not belong to task {task.slug}")
        if not ModelVersion.objects.filter(pk=version.pk, is_active=True).exists():
            raise RegistryError(f"version: {version} is not active; activate it first")
    elif implementation == ALGORITHMIC:
        if not task.algorithm_path:
            raise RegistryError(f"implementation: task {task.slug} has no algorithmic implementation")
        version = None
    else:
        raise RegistryError(f"implementation: expected 'neural' or 'algorithmic', got {implementation!r}")
    version_id = version.pk if version is not None else None
    evidence = _jsonable(evidence or {})
    with transaction.atomic():
        state = _state_for_update(task)
        if state is None:
            try:
                with transaction.atomic():
                    state = ServingState.objects.create(
                        task=task, implementation=implementation, version=version, reason=reason,
                        detail=detail[:300], evidence=evidence, pinned=bool(pinned),
                    )
            except IntegrityError:  # created meanwhile by another process
                state = _state_for_update(task)
            else:
                return _switch_record(task, "", None, state, reason, detail, evidence, actor)
            if state is None:  # created by another process, and gone again before we could lock it
                raise RuntimeError(f"the serving state of task {task.slug} vanished during a switch")
        if state.implementation == implementation and state.version_id == version_id:
            if pinned is not None and pinned != state.pinned:
                state.pinned = pinned
                state.save(update_fields=["pinned", "updated_at"])
            return None
        from_implementation, from_version = state.implementation, state.version
        if state.implementation != implementation:
            state.since = timezone.now()
        state.implementation, state.version = implementation, version
        state.reason, state.detail, state.evidence = reason, detail[:300], evidence
        if pinned is not None:
            state.pinned = pinned
        state.save()
        return _switch_record(task, from_implementation, from_version, state, reason, detail, evidence, actor)


def _switch_record(task: Task, from_implementation: str, from_version: ModelVersion | None, state: ServingState,
                   reason: str, detail: str, evidence: dict, actor: str) -> ServingSwitch:
    switch = ServingSwitch.objects.create(
        task=task, from_implementation=from_implementation, to_implementation=state.implementation,
        from_version=from_version, to_version=state.version, reason=reason, detail=detail[:300],
        evidence=evidence, actor=actor[:150],
    )
    publish("serving.switched", ServingSwitchedPayload(task=task.slug, implementation=state.implementation,
                                                       version_id=state.version_id, reason=reason))
    transaction.on_commit(serving_router_invalidate)
    logger.info("serving %s: %s → %s (%s) %s", task.slug, from_implementation or "-", state.implementation,
                reason, detail[:200])
    return switch


def serving_pin_clear(*, task: Task) -> bool:
    """Let automatic decisions switch ``task`` again (an operator's "auto"); True if it was pinned."""
    with transaction.atomic():
        state = _state_for_update(task)
        if state is None or not state.pinned:
            return False
        state.pinned = False
        state.save(update_fields=["pinned", "updated_at"])
    return True


AUTO = "auto"


def serving_force(*, task: Task, implementation: str, version_id: int | None = None, actor: str,
                  detail: str = "") -> ServingSwitch | None:
    """An operator's override (the REST serving endpoint and the panel): ``neural`` or ``algorithmic``
    switch at once and pin the task; ``auto`` removes the pin and re-evaluates from the measurements.

    ``version_id`` (neural only) names an active version of the task; without it, the task's best.
    Refusals are ``RegistryError``s naming the field; nothing changes then. Returns the switch
    recorded, if serving changed.
    """
    if implementation == AUTO:
        with transaction.atomic():
            serving_pin_clear(task=task)
            switch = serving_reevaluate(task=task).switch
    else:
        version = None
        if implementation == NEURAL:
            version = (ModelVersion.objects.select_related("model").filter(pk=version_id, model__task=task).first()
                       if version_id is not None else version_best_in_task(task=task))
            if version is None:
                raise RegistryError(f"version_id: task {task.slug} has no such active version" if version_id is not None
                                    else f"version_id: task {task.slug} has no active neural version")
        switch = serving_switch(task=task, implementation=implementation, version=version,
                                reason=SwitchReason.OPERATOR, detail=detail or f"forced by {actor}", actor=actor,
                                pinned=True, evidence={"forced_by": actor})
    serving_router_invalidate()
    return switch


@dataclasses.dataclass(frozen=True)
class Reevaluation:
    decision: ServingDecision
    switch: ServingSwitch | None


def serving_reevaluate(*, task: Task, now: datetime | None = None) -> Reevaluation:
    """Apply ``serving_decide`` to the latest held-out samples; switch if it says so.

    The neural candidate is the task's best active version. A pinned (operator-forced)
    state keeps its implementation; a pinned neural state still follows the active version.
    """
    now = now or timezone.now()
    with transaction.atomic(), deciding("serving"):
        state = _state_for_update(task)
        candidate = version_best_in_task(task=task)
        measurements = serving_measurements(task=task, version=candidate, state=state)
        current = state.implementation if state is not None else None
        since = (now - state.since).total_seconds() if state is not None else None
        decision = serving_decide(measurements=measurements, current=current, seconds_since_switch=since,
                                  policy=SwitchPolicy.from_state(state))
        target, reason = decision.implementation, decision.reason
        if state is not None and state.pinned:
            target, reason = state.implementation, SwitchReason.OPERATOR
            if target == NEURAL and candidate is None:
                target, reason = ALGORITHMIC, SwitchReason.NO_NEURAL
        if target == NEURAL and candidate is None:
            target = ALGORITHMIC
        if target == ALGORITHMIC and not task.algorithm_path:
            return Reevaluation(decision, None)  # nothing else can serve; the router copes
        version = candidate if target == NEURAL else None
        if state is None:
            reason = SwitchReason.INITIAL
        elif target == state.implementation:
            reason = SwitchReason.VERSION_ACTIVATED
        switch = serving_switch(task=task, implementation=target, version=version, reason=reason,
                                detail=decision.detail, evidence=decision.evidence)
    return Reevaluation(decision, switch)


def serving_reevaluate_after_activation(*, task_id: int) -> None:
    """``version_activate``'s on-commit hook: a new active version must be considered for serving.

    Never raises: activation has committed; a failed re-evaluation is logged and the router
    still follows the newly active version on its own (see ``router.route_resolve``).
    """
    serving_router_invalidate()
    try:
        task = Task.objects.filter(pk=task_id).first()
        if task is not None:
            serving_reevaluate(task=task)
    except Exception:  # noqa: BLE001
        logger.exception("serving: re-evaluation after a version activation failed (task id %s)", task_id)


def serving_reevaluate_after_feedback(*, task: Task) -> ServingSwitch | None:
    """New feedback was recorded: apply the rule again (live scores may now be conclusive).

    Never raises: the feedback is recorded; a failed re-evaluation is logged and the next one
    (the next feedback, activation or operator) decides.
    """
    try:
        return serving_reevaluate(task=task).switch
    except Exception:  # noqa: BLE001
        logger.exception("serving: re-evaluation after feedback failed (task %s)", task.slug)
        return None


def _jsonable(value):
    """Evidence goes into a JSON column: NaN/inf become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
