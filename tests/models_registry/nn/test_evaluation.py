"""Score functions, prediction wrappers and latency measurement."""

import numpy as np
import pytest
import torch

from models_registry.nn import evaluation
from models_registry.nn.evaluation import (
    EvaluationResult,
    evaluate,
    measure_latency,
    score_predictions,
    to_predictions,
    torch_predict_fn,
)
from models_registry.nn.genome import build_module

torch.set_num_threads(1)

LATENCY_KEYS = {f"p{q}_ms_b{b}" for q in (50, 95, 99) for b in (1, 256)}


# --------------------------------------------------------------------------- scores


def test_accuracy_by_hand():
    assert score_predictions("classes", np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


def test_r2_per_column_by_hand():
    y_true = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # Column 0 perfect (R² 1); column 1: SS_res = 1, SS_tot = 2 -> R² 0.5. Mean 0.75.
    y_pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 4.0]])
    assert score_predictions("values", y_true, y_pred) == pytest.approx(0.75)


def test_r2_is_clipped_per_column():
    y_true = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # Column 1 is far worse than predicting the mean (R² = -13) but counts as 0, not -13.
    y_pred = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, -1.0]])
    assert score_predictions("values", y_true, y_pred) == pytest.approx(0.5)
    assert score_predictions("values", np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])) == 0.0


def test_constant_target_scores_one_only_when_matched():
    y = np.array([[5.0], [5.0]])
    assert score_predictions("values", y, y.copy()) == 1.0
    assert score_predictions("values", y, y + 1) == 0.0


def test_reconstruction_by_hand():
    y_true = np.array([[0.0, 2.0], [2.0, 0.0]])  # mean 1, variance 1 over all elements
    assert score_predictions("reconstruction", y_true, np.ones((2, 2))) == 0.0  # MSE 1
    half = np.array([[0.5, 1.5], [1.5, 0.5]])  # MSE 0.25
    assert score_predictions("reconstruction", y_true, half) == pytest.approx(0.75)
    assert score_predictions("reconstruction", y_true, y_true) == 1.0
    assert score_predictions("reconstruction", y_true, -y_true) == 0.0  # clipped, not negative


def test_non_finite_predictions_score_zero():
    y = np.array([[1.0], [2.0], [3.0]])
    assert score_predictions("values", y, np.array([[1.0], [np.nan], [3.0]])) == 0.0
    assert score_predictions("reconstruction", y, np.array([[1.0], [np.inf], [3.0]])) == 0.0


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        score_predictions("classes", np.array([]), np.array([]))
    with pytest.raises(ValueError, match="rows"):
        score_predictions("classes", np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="output_kind"):
        score_predictions("ranking", np.array([1.0]), np.array([1.0]))


def test_to_predictions():
    raw = np.array([[0.1, 0.9, 0.0], [2.0, -1.0, 1.0]])
    np.testing.assert_array_equal(to_predictions("classes", raw), [1, 0])
    np.testing.assert_array_equal(to_predictions("values", raw), raw)


# --------------------------------------------------------------------------- predict fns


def test_torch_predict_fn_is_eval_mode_float32():
    module = build_module({"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [8], "dropout": 0.5})
    module.train()
    predict = torch_predict_fn(module)
    X = np.arange(8, dtype=np.float64).reshape(2, 4)  # float64 in: converted
    a, b = predict(X), predict(X)
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float32
    assert a.shape == (2, 3)
    np.testing.assert_array_equal(a, b)  # dropout off


# --------------------------------------------------------------------------- latency


def test_latency_has_keys_and_positive_numbers():
    module = build_module({"kind": "mlp", "input_shape": [8], "output_dim": 2, "hidden": [16]})
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    lat = measure_latency(torch_predict_fn(module), X, repeats=10, max_seconds=1.0)
    assert set(lat) == LATENCY_KEYS
    assert all(v > 0 for v in lat.values())
    assert lat["p50_ms_b1"] <= lat["p95_ms_b1"] <= lat["p99_ms_b1"]


def test_latency_tiles_a_small_pool():
    seen: list[int] = []

    def predict(X: np.ndarray) -> np.ndarray:
        seen.append(len(X))
        return X

    X = np.ones((3, 2), dtype=np.float32)
    lat = measure_latency(predict, X, batch_sizes=(1, 256), warmup=1, repeats=2)
    assert set(seen) == {1, 256}
    assert set(lat) == LATENCY_KEYS


class _FakeClock:
    """``perf_counter`` that moves only when a predict call says so (no real time is measured)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_latency_repeats_are_capped_by_max_seconds(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(evaluation, "time", clock)
    calls = 0

    def slow(X: np.ndarray) -> np.ndarray:  # every call "takes" 0.25 s of the fake clock
        nonlocal calls
        calls += 1
        clock.now += 0.25
        return X

    timings: dict[str, list[float]] = {}
    # Two batch sizes share 4 s: 2 s each, i.e. 8 timed repeats of 0.25 s (of 1000 asked), after 1 warm-up.
    lat = measure_latency(slow, np.ones((4, 2)), batch_sizes=(1, 2), warmup=1, repeats=1000, max_seconds=4.0,
                          timings=timings)
    assert calls == 2 * (1 + 8)
    assert timings == {"b1": [250.0] * 8, "b2": [250.0] * 8}
    assert lat["p50_ms_b1"] == lat["p99_ms_b2"] == 250.0


def test_latency_runs_one_repeat_even_past_its_budget(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(evaluation, "time", clock)

    def slower_than_the_budget(X: np.ndarray) -> np.ndarray:
        clock.now += 10.0
        return X

    timings: dict[str, list[float]] = {}
    measure_latency(slower_than_the_budget, np.ones((4, 2)), batch_sizes=(1,), warmup=0, repeats=50,
                    max_seconds=0.5, timings=timings)
    assert timings == {"b1": [10_000.0]}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_algorithm_labels_and_neural_logits_alike():
    X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])

    def algorithm(X):  # final labels, 1-D
        return (X[:, 0] > 0.5).astype(np.int64)

    def neural(X):  # logits, 2-D
        return np.stack([-X[:, 0] + 0.5, X[:, 0] - 0.5], axis=1)

    a = evaluate(algorithm, X, y, "classes", measure=False)
    b = evaluate(neural, X, y, "classes", measure=False)
    assert a.score == b.score == 0.75
    assert a.metric == "accuracy"
    assert a.latency == {}
    assert a.n_rows == 4 and a.split == "gate"


def test_evaluate_with_latency_and_as_dict():
    module = build_module({"kind": "autoencoder", "input_shape": [6], "code_dim": 2, "encoder": [4]})
    X = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    result = evaluate(
        torch_predict_fn(module),
        X,
        X,
        "reconstruction",
        n_parameters=123,
        size_bytes=456,
        latency_kwargs={"repeats": 3, "warmup": 1, "max_seconds": 0.5},
    )
    assert isinstance(result, EvaluationResult)
    assert 0.0 <= result.score <= 1.0
    d = result.as_dict()
    assert d["metric"] == "reconstruction_r2"
    assert d["n_parameters"] == 123
    assert d["size_bytes"] == 456
    assert set(d["latency"]) == LATENCY_KEYS
    assert evaluate(lambda X: X * 2.0, X, X, "values", measure=False).metric == "r2"
