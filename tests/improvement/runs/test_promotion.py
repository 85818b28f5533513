"""The promotion gate on hand-built predictions with known answers (pure: no database)."""

from __future__ import annotations

import numpy as np
import pytest

from improvement.runs.promotion import decide, reference_after, score_gain
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.metrics import Predictions

N = 200
RNG = np.random.default_rng(0)
Y = RNG.integers(0, 4, size=N)
FAST = {"b1": list(0.10 + RNG.random(40) * 0.01), "b256": list(2.0 + RNG.random(40) * 0.1)}
SLOW = {"b1": list(0.20 + RNG.random(40) * 0.01), "b256": list(4.0 + RNG.random(40) * 0.1)}


def _labels(wrong: range | list[int]) -> np.ndarray:
    labels = Y.copy()
    idx = list(wrong)
    labels[idx] = (labels[idx] + 1) % 4
    return labels


def _result(labels: np.ndarray, *, timings=SLOW, size=1000, metric="accuracy", y=Y) -> EvaluationResult:
    predictions = Predictions(labels)
    from models_registry.nn.metrics import metric_score

    latency = {"p95_ms_b1": float(np.percentile(timings["b1"], 95)), "p50_ms_b1": float(np.median(timings["b1"])),
               "p50_ms_b256": float(np.median(timings["b256"]))}
    return EvaluationResult(score=metric_score(metric, y, predictions), metric=metric, latency=latency,
                            n_parameters=10, size_bytes=size, n_rows=len(y), predictions=predictions,
                            timings=timings)


def _decide(objective, baseline, candidate, *, y=Y, threshold=0.1, alpha=0.05):
    return decide(objective=objective, baseline=baseline, candidate=candidate, y_gate=y, threshold=threshold,
                  alpha=alpha, score_tolerance=0.005, latency_budget_ms=200.0)


def test_a_large_significant_gain_is_promoted_and_the_text_shows_the_evidence():
    base = _result(_labels(range(20)))  # 0.90
    cand = _result(_labels(range(15, 20)))  # fixes 15 rows, breaks none: 0.975
    decision = _decide("score", base, cand)
    assert decision.promote and decision.gain == pytest.approx(score_gain(0.9, 0.975))
    assert "McNemar p=3.05e-05" in decision.reason and f"on {N} gate rows" in decision.reason
    assert decision.evidence["paired"]["c"] == 15 and decision.evidence["n_gate"] == N


def test_a_gain_above_the_threshold_without_significance_is_rejected():
    base = _result(_labels(range(20)))
    cand = _result(_labels(range(3, 20)))  # fixes 3 rows: 15 % less error, p = 1/8
    decision = _decide("score", base, cand)
    assert decision.gain == pytest.approx(0.15) and not decision.promote
    assert "not significant" in decision.reason and "p=0.125" in decision.reason


def test_a_significant_gain_below_the_threshold_is_rejected():
    base = _result(_labels(range(100)))  # 0.50
    cand = _result(_labels(range(8, 100)))  # fixes 8 of 100 errors: 8 % less error, p = 1/256
    decision = _decide("score", base, cand)
    assert not decision.promote and "short of the 10% threshold" in decision.reason


def test_swapped_rows_are_not_a_gain():
    """Fixes 10 rows and breaks 10 others: the same accuracy, no promotion whatever the threshold."""
    base = _result(_labels(range(20)))
    cand = _result(_labels(range(10, 30)))
    decision = _decide("score", base, cand, threshold=0.0)
    assert decision.gain == 0.0 and not decision.promote


def test_a_perfect_model_can_still_be_replaced_by_a_faster_equal_one():
    perfect = Y.copy()
    slow, fast = _result(perfect, timings=SLOW), _result(perfect, timings=FAST)
    assert score_gain(1.0, 1.0) == 0.0
    decision = _decide("score", slow, fast)
    assert decision.promote and decision.evidence["rule"] == "tie_faster"
    assert decision.gain == pytest.approx(0.5, abs=0.05) and "score held" in decision.reason
    # ... but not by a slower equal one, nor by a faster one that is worse.
    assert not _decide("score", fast, slow).promote
    assert not _decide("score", slow, _result(_labels(range(12)), timings=FAST)).promote


def test_an_equal_smaller_candidate_wins_on_size():
    labels = _labels(range(20))
    decision = _decide("score", _result(labels, size=1000), _result(labels, size=600))
    assert decision.promote and decision.evidence["rule"] == "tie_smaller" and decision.gain == pytest.approx(0.4)


def test_a_latency_optimization_needs_a_significant_speed_up_and_a_held_score():
    labels = _labels(range(20))
    decision = _decide("latency", _result(labels, timings=SLOW), _result(labels, timings=FAST))
    assert decision.promote and "95% CI" in decision.reason and "p=" in decision.reason
    noise = {"b1": list(0.2 + RNG.random(40) * 0.01), "b256": list(4.0 + RNG.random(40) * 0.1)}
    assert not _decide("latency", _result(labels, timings=SLOW), _result(labels, timings=noise)).promote
    worse = _decide("latency", _result(labels, timings=SLOW), _result(_labels(range(30)), timings=FAST))
    assert not worse.promote and "score loss" in worse.reason


def test_other_metrics_use_a_paired_bootstrap():
    y = np.linspace(0, 1, N).reshape(-1, 1)
    noisy = y + RNG.normal(0, 0.2, size=y.shape)
    better = y + RNG.normal(0, 0.1, size=y.shape)
    base = _result(noisy, metric="r2", y=y)
    assert _decide("score", base, _result(better, metric="r2", y=y), y=y).promote
    same = _decide("score", base, _result(noisy + RNG.normal(0, 0.01, size=y.shape), metric="r2", y=y), y=y)
    assert not same.promote and "bootstrap" in same.reason


def test_the_gate_needs_the_predictions():
    base = _result(Y)
    stripped = EvaluationResult(score=1.0, metric="accuracy", latency={}, n_parameters=None, size_bytes=None,
                                n_rows=N)
    with pytest.raises(ValueError, match="predictions"):
        _decide("score", base, stripped)


FASTER = {"b1": list(0.05 + RNG.random(40) * 0.005), "b256": list(1.0 + RNG.random(40) * 0.05)}


def test_a_chain_of_score_held_promotions_cannot_drift_below_the_lineage_reference():
    """Each step alone is within the tolerance of its baseline; the second is not within it of the
    score the lineage had before the first, so it is refused."""
    def held_step(baseline, candidate, reference):
        return decide(objective="latency", baseline=baseline, candidate=candidate, y_gate=Y, threshold=0.1,
                      alpha=0.05, score_tolerance=0.012, latency_budget_ms=200.0, reference_score=reference)

    v1 = _result(_labels(range(20)), timings=SLOW)     # 0.900
    v2 = _result(_labels(range(21)), timings=FAST)     # 0.895: one row lost, twice as fast
    v3 = _result(_labels(range(23)), timings=FASTER)   # 0.885: two more rows lost, twice as fast again
    first = held_step(v1, v2, reference=None)
    assert first.promote and first.evidence["score_reference"] == pytest.approx(0.90)
    reference = reference_after(first, v2.score)
    assert reference == pytest.approx(0.90)  # kept through the held promotion
    # Against its own baseline alone the second step is within the tolerance ...
    assert held_step(v2, v3, reference=None).promote
    # ... against the lineage's reference it is not.
    second = held_step(v2, v3, reference=reference)
    assert not second.promote and second.evidence["rule"] == "score_guard"
    assert "lineage reference 0.9000" in second.reason and "score loss 0.0150" in second.reason
    # The same holds for a score run's faster-but-equal candidate.
    tie = decide(objective="score", baseline=v2, candidate=v3, y_gate=Y, threshold=0.1, alpha=0.05,
                 score_tolerance=0.012, latency_budget_ms=200.0, reference_score=reference)
    assert not tie.promote


def test_a_promotion_that_gains_score_resets_the_reference():
    base = _result(_labels(range(20)))
    better = _result(_labels(range(15, 20)))  # 0.975
    decision = decide(objective="score", baseline=base, candidate=better, y_gate=Y, threshold=0.1, alpha=0.05,
                      score_tolerance=0.005, latency_budget_ms=200.0, reference_score=0.99)
    assert decision.promote and decision.evidence["rule"] == "score"
    assert reference_after(decision, better.score) == pytest.approx(0.975)
