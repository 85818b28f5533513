"""The HPA-axis simulator: deterministic, finite, physiologically sensible, smooth."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models_registry.data import hormone_model as hm
from models_registry.data.hormone_model import (
    HORMONE_INPUT_SPEC,
    HORMONE_OUTPUT_NAMES,
    HormoneResponseAlgorithm,
    sample_hormone_inputs,
    simulate_hormone_response,
)

NAMES = [p["name"] for p in HORMONE_INPUT_SPEC]
OUT = {name: i for i, name in enumerate(HORMONE_OUTPUT_NAMES)}


def _nominal(**changes: float) -> np.ndarray:
    """One parameter row at the middle of every range, with some values changed."""
    row = {p["name"]: (p["low"] + p["high"]) / 2 for p in HORMONE_INPUT_SPEC}
    row.update(changes)
    return np.array([[row[name] for name in NAMES]], dtype=np.float32)


def _sweep(name: str, values: list[float], **fixed: float) -> np.ndarray:
    return simulate_hormone_response(np.concatenate([_nominal(**{name: v}, **fixed) for v in values]))


def test_spec_is_well_formed() -> None:
    assert 6 <= len(HORMONE_INPUT_SPEC) <= 8
    assert 4 <= len(HORMONE_OUTPUT_NAMES) <= 6
    for p in HORMONE_INPUT_SPEC:
        assert {"name", "low", "high", "unit"} <= set(p)
        assert p["low"] < p["high"]
    assert len(set(NAMES)) == len(NAMES)


def test_sampling_is_uniform_within_ranges_and_seeded() -> None:
    x = sample_hormone_inputs(2000, np.random.default_rng(0))
    assert x.shape == (2000, len(HORMONE_INPUT_SPEC)) and x.dtype == np.float32
    low = np.array([p["low"] for p in HORMONE_INPUT_SPEC], dtype=np.float32)
    high = np.array([p["high"] for p in HORMONE_INPUT_SPEC], dtype=np.float32)
    assert np.all(x >= low) and np.all(x <= high)
    # Spread over the whole range, not clumped.
    assert np.all((x.max(0) - x.min(0)) > 0.95 * (high - low))
    assert np.array_equal(x, sample_hormone_inputs(2000, np.random.default_rng(0)))


def test_simulation_is_deterministic_finite_and_float32() -> None:
    x = sample_hormone_inputs(64, np.random.default_rng(1))
    a = simulate_hormone_response(x)
    b = simulate_hormone_response(x.copy())
    assert a.shape == (64, len(HORMONE_OUTPUT_NAMES)) and a.dtype == np.float32
    assert np.all(np.isfinite(a))
    assert np.array_equal(a, b)
    # A row's answer does not depend on its batch-mates (vectorisation is exact per row).
    assert np.allclose(simulate_hormone_response(x[5:6]), a[5:6], rtol=1e-6)


def test_outputs_are_in_physiological_ranges() -> None:
    y = simulate_hormone_response(sample_hormone_inputs(200, np.random.default_rng(2)))
    assert np.all(y[:, OUT["peak_cortisol"]] >= y[:, OUT["cortisol_auc"]])  # a peak is above the mean
    assert np.all((y[:, OUT["peak_cortisol"]] > 1) & (y[:, OUT["peak_cortisol"]] < 60))  # µg/dL
    assert np.all((y[:, OUT["response_peak_time"]] > 2) & (y[:, OUT["response_peak_time"]] <= 24))
    assert np.all(y[:, OUT["peak_acth"]] > 0)


def test_larger_stressor_raises_peak_cortisol_and_acth() -> None:
    y = _sweep("stress_amplitude", [0.5, 1.5, 2.5, 3.5], circadian_amplitude=0.0)
    assert np.all(np.diff(y[:, OUT["peak_cortisol"]]) > 0)
    assert np.all(np.diff(y[:, OUT["peak_acth"]]) > 0)
    assert np.all(np.diff(y[:, OUT["cortisol_auc"]]) > 0)


def test_stronger_feedback_lowers_the_area_under_the_curve() -> None:
    y = _sweep("feedback_strength", [0.5, 1.0, 2.0, 3.0])
    assert np.all(np.diff(y[:, OUT["cortisol_auc"]]) < 0)
    assert np.all(np.diff(y[:, OUT["peak_cortisol"]]) < 0)


def test_faster_cortisol_clearance_lowers_the_area() -> None:
    y = _sweep("cortisol_clearance", [0.4, 0.7, 1.0, 1.2])
    assert np.all(np.diff(y[:, OUT["cortisol_auc"]]) < 0)


def test_later_stressor_peaks_later() -> None:
    onsets = [3.0, 6.0, 9.0, 12.0]
    y = _sweep("stress_onset", onsets)
    peak_times = y[:, OUT["response_peak_time"]]
    assert np.all(np.diff(peak_times) > 2.5)
    # The cortisol response lags the stressor's start (CRH → ACTH → cortisol cascade).
    assert np.all(peak_times > np.array(onsets))


def test_smooth_in_the_parameters() -> None:
    """Small parameter changes give small output changes: what makes it learnable."""
    base = _nominal()
    y0 = simulate_hormone_response(base)[0]
    for j in range(len(NAMES)):
        p = base.copy()
        p[0, j] += 1e-3 * (HORMONE_INPUT_SPEC[j]["high"] - HORMONE_INPUT_SPEC[j]["low"])
        y1 = simulate_hormone_response(p)[0]
        rel = np.abs(y1 - y0) / np.abs(y0)
        # response_peak_time is resolved to one RK4 step (58 s): allow that much jump.
        assert np.all(rel[[OUT[n] for n in OUT if n != "response_peak_time"]] < 0.01), NAMES[j]
        assert abs(y1[OUT["response_peak_time"]] - y0[OUT["response_peak_time"]]) <= hm.DT + 1e-6


def test_integration_has_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Halving the RK4 step barely changes the outputs: the step size is not driving them."""
    x = sample_hormone_inputs(16, np.random.default_rng(3))
    coarse = simulate_hormone_response(x)
    monkeypatch.setattr(hm, "N_STEPS", hm.N_STEPS * 2)
    monkeypatch.setattr(hm, "DT", hm.HOURS / (hm.N_STEPS))
    fine = simulate_hormone_response(x)
    others = [i for n, i in OUT.items() if n != "response_peak_time"]
    assert np.allclose(coarse[:, others], fine[:, others], rtol=1e-3)
    assert np.all(
        np.abs(coarse[:, OUT["response_peak_time"]] - fine[:, OUT["response_peak_time"]]) <= 2 * hm.DT
    )


def test_step_count_can_be_chosen_and_defaults_to_the_labels() -> None:
    """``n_steps`` runs a cheaper (coarser) RK4; the default is exactly the task's labels."""
    x = sample_hormone_inputs(32, np.random.default_rng(7))
    labels = simulate_hormone_response(x)
    assert np.array_equal(simulate_hormone_response(x, n_steps=hm.N_STEPS), labels)
    coarse = simulate_hormone_response(x, n_steps=300)
    assert coarse.dtype == np.float32 and np.all(np.isfinite(coarse))
    assert not np.array_equal(coarse, labels)
    others = [i for n, i in OUT.items() if n != "response_peak_time"]
    assert np.allclose(coarse[:, others], labels[:, others], rtol=1e-2)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="n_steps"):
            simulate_hormone_response(x, n_steps=bad)


def test_inputs_are_clamped_and_validated() -> None:
    low = np.array([[p["low"] for p in HORMONE_INPUT_SPEC]])
    below = low - 10.0
    assert np.array_equal(simulate_hormone_response(below), simulate_hormone_response(low))
    assert simulate_hormone_response(low[0]).shape == (1, len(HORMONE_OUTPUT_NAMES))  # one row as 1-D
    assert simulate_hormone_response(np.zeros((0, len(NAMES)))).shape == (0, len(HORMONE_OUTPUT_NAMES))
    with pytest.raises(ValueError, match="shape"):
        simulate_hormone_response(np.zeros((3, 5)))
    bad = low.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        simulate_hormone_response(bad)


def test_algorithm_protocol() -> None:
    x = sample_hormone_inputs(8, np.random.default_rng(4))
    algo = HormoneResponseAlgorithm()
    assert algo.fit(x, None) is algo
    assert np.array_equal(algo.predict(x), simulate_hormone_response(x))


def test_a_linear_model_already_explains_most_of_it() -> None:
    """Sanity check of learnability: smooth enough that even ridge regression gets R² > 0.8.

    (An MLP reaches R² > 0.99 with 4000 samples; that check trains for ~30 s and is
    kept out of the fast suite.)
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    x = sample_hormone_inputs(1500, np.random.default_rng(5))
    y = simulate_hormone_response(x)
    model = Ridge(alpha=1e-3).fit(x[:1000], y[:1000])
    assert r2_score(y[1000:], model.predict(x[1000:])) > 0.8


def test_timing_of_a_batch_of_1000() -> None:
    x = sample_hormone_inputs(1000, np.random.default_rng(6))
    start = time.perf_counter()
    simulate_hormone_response(x)
    elapsed = time.perf_counter() - start
    # Reported, not asserted: the point is that it is costly (tens of ms or more).
    print(f"\nhormone simulator: 1000 samples in {elapsed * 1000:.0f} ms ({hm.N_STEPS} RK4 steps)")
