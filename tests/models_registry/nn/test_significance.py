"""Paired tests and intervals on hand-built prediction vectors with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.nn.metrics import Predictions
from models_registry.nn.significance import (
    compare_paired,
    mcnemar_exact,
    min_detectable_accuracy_gain,
    paired_bootstrap,
    score_interval,
    timing_comparison,
    wilson_interval,
)


def _correct(n, wrong):
    v = np.ones(n, dtype=bool)
    v[list(wrong)] = False
    return v


def test_mcnemar_exact_one_sided_p_values():
    # Candidate fixes 5 rows and breaks none: p = 0.5 ** 5.
    result = mcnemar_exact(_correct(100, range(10)), _correct(100, range(5, 10)))
    assert (result.detail["b"], result.detail["c"]) == (0, 5)
    assert result.p_better == pytest.approx(0.5 ** 5)
    assert result.delta == pytest.approx(0.05)
    # Fixes 6, breaks 1: P(X >= 6 | Bin(7, 1/2)) = (7 + 1) / 128.
    result = mcnemar_exact(_correct(100, range(10)), _correct(100, [*range(6, 10), 50]))
    assert (result.detail["b"], result.detail["c"]) == (1, 6)
    assert result.p_better == pytest.approx(8 / 128)
    # Identical predictions: no evidence either way.
    same = mcnemar_exact(_correct(50, [1, 2]), _correct(50, [1, 2]))
    assert same.p_better == 1.0 and same.p_worse == 1.0 and same.delta == 0.0
    # Worse candidate: not better, clearly worse.
    worse = mcnemar_exact(_correct(100, []), _correct(100, range(8)))
    assert worse.p_better == 1.0 and worse.p_worse == pytest.approx(0.5 ** 8)


def test_a_one_row_gain_at_the_top_is_not_significant():
    """0.996 → 1.000 on 269 rows (one image) is a 100 % error reduction but no evidence at all."""
    result = mcnemar_exact(_correct(269, [7]), _correct(269, []))
    assert result.p_better == 0.5


def test_paired_bootstrap_separates_a_real_gain_from_none():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    base = y.copy()
    base[:90] = (y[:90] + 1) % 3  # 70 % right
    better = y.copy()
    better[:30] = (y[:30] + 1) % 3  # 90 % right
    gain = paired_bootstrap("balanced_accuracy", y, Predictions(base), Predictions(better), seed=1)
    assert gain.p_better < 0.01 and gain.ci95[0] > 0
    none = paired_bootstrap("balanced_accuracy", y, Predictions(base), Predictions(base.copy()), seed=1)
    assert none.p_better == 1.0 and none.ci95 == (0.0, 0.0)


def test_compare_paired_picks_the_test_the_metric_needs():
    y = np.array([0, 1] * 20)
    assert compare_paired("accuracy", y, Predictions(y), Predictions(y)).test == "mcnemar"
    assert compare_paired("macro_f1", y, Predictions(y), Predictions(y)).test == "bootstrap"
    values = np.linspace(0, 1, 40).reshape(-1, 1)
    assert compare_paired("r2", values, Predictions(values), Predictions(values * 0.9)).test == "bootstrap"


def test_intervals():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    y = np.array([0, 1] * 50)
    assert score_interval("accuracy", y, Predictions(y)) == wilson_interval(100, 100)
    lo, hi = score_interval("r2", np.linspace(0, 1, 60), Predictions(np.linspace(0, 1, 60) + 0.05), seed=0)
    assert 0.0 <= lo <= hi <= 1.0


def test_the_smallest_detectable_gain_shrinks_with_the_split():
    assert min_detectable_accuracy_gain(100) == 0.05
    assert min_detectable_accuracy_gain(500) == 0.01
    assert min_detectable_accuracy_gain(100, alpha=0.01) == 0.07


def test_timing_comparison_calls_a_real_speed_up_and_not_noise():
    rng = np.random.default_rng(0)
    base = {"b1": list(1.0 + rng.random(40) * 0.1), "b256": list(10.0 + rng.random(40))}
    faster = {"b1": list(0.5 + rng.random(40) * 0.05), "b256": list(5.0 + rng.random(40) * 0.5)}
    same = {"b1": list(1.0 + rng.random(40) * 0.1), "b256": list(10.0 + rng.random(40))}
    speed_up = timing_comparison(base, faster)
    assert speed_up.gain == pytest.approx(0.5, abs=0.05) and speed_up.p_faster < 0.01 and speed_up.ci95[1] < 1.0
    noise = timing_comparison(base, same)
    assert abs(noise.gain) < 0.1 and noise.p_faster > 0.05
    assert timing_comparison({"b1": [1.0]}, {"b256": [1.0]}) is None
