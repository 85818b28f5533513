"""Dynamic switching: the pure rule (hysteresis, dwell) and the services that apply it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import OutboxEvent
from models_registry.errors import RegistryError
from models_registry.services import version_activate
from models_registry.serving.choices import SwitchReason
from models_registry.serving.feedback import LiveScore
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.switching import (
    ALGORITHMIC,
    NEURAL,
    ServingMeasurements,
    SwitchPolicy,
    serving_decide,
    serving_reevaluate,
    serving_switch,
)
from tests.models_registry.serving.helpers import sample

POLICY = SwitchPolicy(score_margin=0.01, latency_margin=0.10, min_dwell_s=60.0)


def m(ns: float | None, sa: float | None = 0.95, *, nl: float | None = 1.0, al: float | None = 2.0,
      p95: float | None = None, budget: float = 10.0, tol: float = 0.02) -> ServingMeasurements:
    return ServingMeasurements(neural_score=ns, algorithmic_score=sa, neural_latency_ms=nl, algorithmic_latency_ms=al,
                               neural_latency_p95_ms=p95 if p95 is not None else nl, latency_budget_ms=budget,
                               tolerance=tol)


# ------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("measurements", "implementation", "reason"),
    [
        # better within budget, even if slower than the algorithm
        (m(0.99, nl=5.0, al=2.0), NEURAL, SwitchReason.NEURAL_BETTER),
        # better but over budget and slower: the algorithm
        (m(0.99, nl=50.0, al=2.0, budget=10.0), ALGORITHMIC, SwitchReason.NEURAL_SLOWER),
        # within the floor (0.95 - 0.02) and faster
        (m(0.94, nl=0.5, al=2.0), NEURAL, SwitchReason.NEURAL_FASTER_WITHIN_FLOOR),
        # within the floor but slower
        (m(0.94, nl=3.0, al=2.0), ALGORITHMIC, SwitchReason.NEURAL_SLOWER),
        # below the floor, however fast
        (m(0.90, nl=0.1, al=2.0), ALGORITHMIC, SwitchReason.BELOW_FLOOR),
    ],
)
def test_rule_from_the_algorithm(measurements, implementation, reason):
    decision = serving_decide(measurements=measurements, current=ALGORITHMIC, seconds_since_switch=1e6, policy=POLICY)
    assert (decision.implementation, decision.reason) == (implementation, reason)
    assert decision.switch == (implementation != ALGORITHMIC)
    assert decision.evidence["floor"] == pytest.approx(0.93)


def test_first_decision_needs_no_dwell_and_missing_scores_keep_the_algorithm():
    first = serving_decide(measurements=m(0.99), current=None, seconds_since_switch=None, policy=POLICY)
    assert first.implementation == NEURAL and first.switch
    unknown = serving_decide(measurements=m(None), current=None, seconds_since_switch=None, policy=POLICY)
    assert unknown.implementation == ALGORITHMIC and unknown.reason == SwitchReason.INSUFFICIENT_EVIDENCE
    no_neural = ServingMeasurements(has_neural=False, algorithmic_score=0.9)
    assert serving_decide(measurements=no_neural, current=NEURAL, seconds_since_switch=1e6).implementation == ALGORITHMIC


def test_entering_neural_needs_the_margin_staying_does_not():
    # 0.935 is above the floor 0.93 but not by the 0.01 margin: the algorithm keeps serving...
    at_floor = m(0.935, nl=1.0, al=2.0)
    assert serving_decide(measurements=at_floor, current=ALGORITHMIC, seconds_since_switch=1e6,
                          policy=POLICY).implementation == ALGORITHMIC
    # ...while a serving neural version at the same numbers keeps serving.
    assert serving_decide(measurements=at_floor, current=NEURAL, seconds_since_switch=1e6,
                          policy=POLICY).implementation == NEURAL
    # 5 % faster is not faster enough to enter (10 % margin), enough to stay.
    barely_faster = m(0.95, nl=1.9, al=2.0)
    assert serving_decide(measurements=barely_faster, current=ALGORITHMIC, seconds_since_switch=1e6,
                          policy=POLICY).implementation == ALGORITHMIC
    assert serving_decide(measurements=barely_faster, current=NEURAL, seconds_since_switch=1e6,
                          policy=POLICY).implementation == NEURAL


def _replay(sequence: list[ServingMeasurements], *, step_s: float, policy: SwitchPolicy = POLICY) -> list[str]:
    """Apply the rule to a sequence of measurements taken ``step_s`` apart; returns who served after each."""
    current, since, served = ALGORITHMIC, 1e6, []
    for measurements in sequence:
        decision = serving_decide(measurements=measurements, current=current, seconds_since_switch=since,
                                  policy=policy)
        if decision.switch:
            current, since = decision.implementation, 0.0
        since += step_s
        served.append(current)
    return served


def _switches(served: list[str]) -> int:
    return sum(1 for a, b in zip([ALGORITHMIC, *served], served, strict=False) if a != b)


def test_measurements_wobbling_around_the_floor_do_not_flap():
    # The neural score wobbles between 0.932 and 0.938: above the floor (0.93) but below floor +
    # margin (0.94), while it is clearly faster. The algorithm serves and serving never switches.
    wobble = [m(0.935 + (0.003 if i % 2 else -0.003), nl=1.0, al=2.0) for i in range(40)]
    assert _switches(_replay(wobble, step_s=120)) == 0
    # Once it clears floor + margin it switches once, and stays through the same wobble.
    rising = [m(0.945, nl=1.0, al=2.0)] + wobble
    served = _replay(rising, step_s=120)
    assert served[0] == NEURAL and _switches(served) == 1 and set(served) == {NEURAL}


def test_latency_wobbling_around_the_algorithm_does_not_flap():
    # Neural latency alternates 1.85 / 2.05 ms against the algorithm's 2.0 ms at an equal score.
    wobble = [m(0.95, nl=1.85 if i % 2 else 2.05, al=2.0) for i in range(40)]
    assert _switches(_replay(wobble, step_s=120)) == 0


def test_dwell_time_holds_a_switch_back_until_it_has_passed():
    policy = SwitchPolicy(score_margin=0.01, latency_margin=0.1, min_dwell_s=60.0)
    # Neural serves (just switched); the algorithm becomes better on latency grounds (neural slower).
    slower = m(0.95, nl=3.0, al=2.0)
    held = serving_decide(measurements=slower, current=NEURAL, seconds_since_switch=10.0, policy=policy)
    assert held.implementation == NEURAL and held.held and not held.switch and "dwell" in held.detail
    after = serving_decide(measurements=slower, current=NEURAL, seconds_since_switch=61.0, policy=policy)
    assert after.implementation == ALGORITHMIC and after.switch
    # Falling below the floor is a safety matter: it does not wait for the dwell time.
    below = serving_decide(measurements=m(0.80), current=NEURAL, seconds_since_switch=1.0, policy=policy)
    assert below.implementation == ALGORITHMIC and below.reason == SwitchReason.BELOW_FLOOR and below.switch


def test_a_hand_built_sequence_switches_only_when_the_evidence_is_clear():
    A, N = ALGORITHMIC, NEURAL
    fast, slow = m(0.96, nl=1.0), m(0.95, nl=3.0)
    # One measurement every 20 s; the dwell is 60 s.
    sequence = [m(0.90)] * 3 + [fast] * 2 + [slow] * 3 + [fast] * 4 + [m(0.80)]
    served = _replay(sequence, step_s=20.0)
    assert served == [
        A, A, A,  # below the floor
        N, N,  # within the floor and faster: switch
        N,  # slower, but 40 s < dwell: held
        A, A,  # dwell passed: back to the algorithm
        A,  # faster again, but 40 s < dwell: held
        N, N, N,  # dwell passed: neural
        A,  # below the floor: at once, whatever the dwell
    ]
    assert _switches(served) == 4


# ------------------------------------------------------------------------------ services


@pytest.mark.django_db
def test_reevaluate_records_the_decision_with_its_evidence(served_task):
    task, model, v1, v2 = served_task
    sample(task, score=0.95, p50=2.0)
    sample(task, version=v2, score=0.96, p50=0.5)
    result = serving_reevaluate(task=task)
    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.version_id) == (NEURAL, v2.pk)
    assert result.switch is not None and result.switch.reason == SwitchReason.INITIAL
    assert result.decision.reason == SwitchReason.NEURAL_FASTER_WITHIN_FLOOR
    assert result.switch.evidence["neural_score"] == 0.96 and result.switch.evidence["floor"] == pytest.approx(0.93)
    assert OutboxEvent.objects.filter(type="serving.switched", payload__task=task.slug).count() == 1
    # Nothing changed: no new switch.
    assert serving_reevaluate(task=task).switch is None
    assert ServingSwitch.objects.filter(task=task).count() == 1


@pytest.mark.django_db
def test_reevaluate_goes_back_to_the_algorithm_after_the_dwell(served_task):
    task, model, v1, v2 = served_task
    sample(task, score=0.95, p50=2.0)
    sample(task, version=v2, score=0.96, p50=0.5)
    serving_reevaluate(task=task)
    # A new measurement: no better than the algorithm and slower. Within the dwell: held.
    sample(task, version=v2, score=0.95, p50=5.0)
    assert serving_reevaluate(task=task).decision.held
    assert ServingState.objects.get(task=task).implementation == NEURAL
    # After the dwell the switch happens, with the reason of the rule.
    later = timezone.now() + timedelta(seconds=3600)
    result = serving_reevaluate(task=task, now=later)
    assert result.switch.reason == SwitchReason.NEURAL_SLOWER
    state = ServingState.objects.get(task=task)
    assert state.implementation == ALGORITHMIC and state.version_id is None


@pytest.mark.django_db
def test_version_activation_triggers_a_reevaluation_on_commit(served_task, django_capture_on_commit_callbacks):
    task, model, v1, v2 = served_task
    sample(task, score=0.95, p50=2.0)
    sample(task, version=v1, score=0.97, p50=0.5)
    sample(task, version=v2, score=0.60, p50=0.5)
    with django_capture_on_commit_callbacks(execute=True):
        version_activate(version=v1, reason="rollback")
    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.version_id) == (NEURAL, v1.pk)
    # Activating the weak v2 again: serving leaves neural at once (below the floor).
    with django_capture_on_commit_callbacks(execute=True):
        version_activate(version=v2, reason="bad promotion")
    state.refresh_from_db()
    assert state.implementation == ALGORITHMIC and state.reason == SwitchReason.BELOW_FLOOR


@pytest.mark.django_db
def test_a_pinned_task_keeps_its_implementation_but_follows_the_active_version(served_task):
    task, model, v1, v2 = served_task
    sample(task, score=0.99, p50=0.1)  # the algorithm is far better
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR, pinned=True)
    assert serving_reevaluate(task=task).switch is None
    version_activate(version=v1, reason="rollback")
    result = serving_reevaluate(task=task)
    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.version_id, state.pinned) == (NEURAL, v1.pk, True)
    assert result.switch.reason == SwitchReason.VERSION_ACTIVATED


@pytest.mark.django_db
def test_switch_refuses_inactive_or_foreign_versions(served_task):
    task, model, v1, v2 = served_task
    with pytest.raises(RegistryError, match="not active"):
        serving_switch(task=task, implementation=NEURAL, version=v1, reason=SwitchReason.OPERATOR)
    with pytest.raises(RegistryError, match="needs an active version"):
        serving_switch(task=task, implementation=NEURAL, reason=SwitchReason.OPERATOR)
    assert not ServingState.objects.filter(task=task).exists()


# ------------------------------------------------------------------------------ live feedback


def live(score: float, low: float, high: float, n: int = 100) -> LiveScore:
    return LiveScore(n=n, metric="accuracy", score=score, low=low, high=high)


def with_live(base: ServingMeasurements, neural: LiveScore | None, algorithmic: LiveScore | None = None):
    return ServingMeasurements(**{**base.__dict__, "neural_live": neural, "algorithmic_live": algorithmic,
                                  "live_min_count": 30})


def test_live_feedback_below_the_floor_beats_held_out_scores_and_the_dwell():
    # Held out, neural is better (0.99 vs 0.95); live, its whole interval is below the floor 0.93.
    measurements = with_live(m(0.99, nl=0.5), live(0.80, 0.75, 0.85))
    decision = serving_decide(measurements=measurements, current=NEURAL, seconds_since_switch=5.0, policy=POLICY)
    assert (decision.implementation, decision.reason, decision.switch) == (ALGORITHMIC, SwitchReason.LIVE_BELOW_FLOOR,
                                                                           True)
    assert "neural live accuracy 0.8000 [0.7500, 0.8500] over 100 reports < floor 0.9300" in decision.detail
    assert decision.evidence["neural_live"] == {"n": 100, "metric": "accuracy", "score": 0.80, "low": 0.75,
                                                "high": 0.85}
    # And it keeps neural out while the evidence stands.
    again = serving_decide(measurements=measurements, current=ALGORITHMIC, seconds_since_switch=1e6, policy=POLICY)
    assert (again.implementation, again.switch) == (ALGORITHMIC, False)


@pytest.mark.parametrize(
    ("neural", "algorithmic"),
    [
        (live(0.90, 0.85, 0.95), None),  # the interval reaches the floor: not conclusive
        (live(0.50, 0.30, 0.70, n=29), None),  # conclusive, but fewer reports than the minimum
        (live(0.95, 0.93, 0.97), live(0.96, 0.94, 0.98)),  # both live, overlapping
    ],
)
def test_inconclusive_or_thin_live_feedback_leaves_the_held_out_rule_in_charge(neural, algorithmic):
    decision = serving_decide(measurements=with_live(m(0.99, nl=0.5), neural, algorithmic), current=NEURAL,
                              seconds_since_switch=1e6, policy=POLICY)
    assert (decision.implementation, decision.reason) == (NEURAL, SwitchReason.NEURAL_BETTER)


def test_the_algorithms_own_live_score_sets_the_level_when_it_has_enough():
    # Held out the algorithm scores 0.95, live it does worse (0.70 [0.65, 0.75]): neural's live 0.85 beats it.
    measurements = with_live(m(0.99, nl=0.5), live(0.85, 0.80, 0.90), live(0.70, 0.65, 0.75))
    decision = serving_decide(measurements=measurements, current=ALGORITHMIC, seconds_since_switch=1e6, policy=POLICY)
    assert (decision.implementation, decision.reason) == (NEURAL, SwitchReason.LIVE_BETTER)
    # Live better needs both live and the margin; over the budget it is not enough.
    slow = with_live(m(0.99, nl=50.0, budget=10.0), live(0.85, 0.80, 0.90), live(0.70, 0.65, 0.75))
    assert serving_decide(measurements=slow, current=ALGORITHMIC, seconds_since_switch=1e6,
                          policy=POLICY).reason == SwitchReason.NEURAL_SLOWER

