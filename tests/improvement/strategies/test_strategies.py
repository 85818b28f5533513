"""Strategies without a database: triggers and candidate building on a tiny problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from improvement.strategies.architecture import trial_seconds
from improvement.strategies.registry import (
    ModelMetrics,
    StrategyContext,
    Triggers,
    all_strategies,
    get_strategy,
)
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.training import TrainConfig, TrainData, train_module

GENOME = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [3], "activation": "tanh",
          "dropout": 0.0, "norm": "none"}


def _metrics(score, latency=1.0, teacher=None, genetic=None):
    return ModelMetrics(score=score, latency_p95_ms=latency, latency_budget_ms=200.0, teacher_score=teacher,
                        genetic_trigger=genetic)


def test_registry_has_the_four_strategies_in_trigger_order():
    assert list(all_strategies()) == ["training", "optimization", "architecture", "distillation"]
    with pytest.raises(KeyError, match="expected one of"):
        get_strategy("telepathy")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (_metrics(0.5), {"training"}),
        (_metrics(0.8), {"architecture"}),
        (_metrics(0.9), set()),
        (_metrics(0.9, latency=250.0), {"optimization"}),
        (_metrics(0.8, teacher=0.95), {"architecture", "distillation"}),
        (_metrics(0.96, teacher=0.95), set()),
        (_metrics(0.9, genetic="plateau: last 3 training runs gained < 10%"), {"architecture"}),
    ],
)
def test_triggers_pick_the_right_strategies(metrics, expected):
    fired = {name for name, s in all_strategies().items() if s.applies(metrics, Triggers()).applies}
    assert fired == expected


def test_triggers_respect_configuration_switches():
    triggers = Triggers(cross_model_distillation=False, genetic_enhanced=False, optimization_latency_ms=0.5)
    metrics = _metrics(0.9, latency=1.0, teacher=0.99, genetic="plateau")
    fired = {name for name, s in all_strategies().items() if s.applies(metrics, triggers).applies}
    assert fired == {"optimization"}


def _context(seed: int = 0, *, epochs: int = 3) -> StrategyContext:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(3, 4))
    y = np.arange(300) % 3
    X = (centers[y] + rng.normal(0, 1, size=(300, 4))).astype(np.float32)
    data = TrainData(X_train=X[:200], y_train=y[:200], X_val=X[200:], y_val=y[200:])
    torch.manual_seed(seed)
    module = build_module(GENOME)
    set_normalisation(module, data.X_train, data.y_train, "classes")
    train_module(module, data, output_kind="classes", config=TrainConfig(epochs=1, seed=seed))
    return StrategyContext(
        output_kind="classes", input_shape=(4,), genome=GENOME, module=module, data=data,
        train_config=TrainConfig(epochs=epochs, seed=seed, patience=5), seed=seed, time_budget_s=8.0,
        params={"trials": 6}, input_kind="table",
    )


def _noop(fraction, message, point=None):
    assert 0.0 <= fraction <= 1.0


@pytest.mark.parametrize("name", ["training", "optimization", "architecture"])
def test_each_strategy_builds_a_valid_candidate(name):
    context = _context()
    candidates = get_strategy(name).build_candidates(context, _noop)
    assert len(candidates) == 1
    candidate = candidates[0]
    out = candidate.module(torch.as_tensor(context.data.X_val[:5]))
    assert out.shape == (5, 3)
    assert candidate.val_score is not None and 0.0 <= candidate.val_score <= 1.0


def test_the_architecture_search_refits_its_best_trial_and_keeps_the_better_on_validation():
    context = _context()
    context.time_budget_s, context.params = 60.0, {"trials": 3}
    lines: list[str] = []
    context.log = lines.append

    (candidate,) = get_strategy("architecture").build_candidates(context, _noop)

    details = candidate.details
    refit, trial = details["refit"], details["trial_val_score"]
    assert 0.0 <= refit["val_score"] <= 1.0 and refit["seconds"] > 0
    # The candidate is whichever of the trial's model and its refit scored higher on validation.
    assert candidate.val_score == (refit["val_score"] if refit["kept"] else trial)
    assert refit["kept"] == (refit["val_score"] > trial)
    assert any(line.startswith("refit: val") for line in lines), lines
    out = candidate.module(torch.as_tensor(context.data.X_val[:5]))
    assert out.shape == (5, 3)


def test_without_a_refit_the_trials_get_the_whole_budget():
    context, with_refit = _context(), _context()
    context.time_budget_s, context.params = 20.0, {"trials": 1, "refit": False}
    with_refit.time_budget_s = 20.0
    assert trial_seconds(context, 1) > trial_seconds(with_refit, 1)
    (candidate,) = get_strategy("architecture").build_candidates(context, _noop)
    assert "refit" not in candidate.details and candidate.val_score == candidate.details["trial_val_score"]


def test_training_beats_a_barely_trained_model_on_validation():
    context = _context(epochs=30)
    from models_registry.nn.evaluation import score_predictions, torch_predict_fn

    before = score_predictions("classes", context.data.y_val,
                               torch_predict_fn(context.module)(context.data.X_val).argmax(1))
    (candidate,) = get_strategy("training").build_candidates(context, _noop)
    assert candidate.val_score > before


def test_distillation_uses_the_teacher():
    context = _context(epochs=20)
    teacher = build_module({**GENOME, "hidden": [32]})
    set_normalisation(teacher, context.data.X_train, context.data.y_train, "classes")
    train_module(teacher, context.data, output_kind="classes", config=TrainConfig(epochs=30, seed=1))
    context.teacher_module = teacher
    context.teacher_fn = lambda x: teacher(x)
    context.teacher_label = "wide teacher"
    (candidate,) = get_strategy("distillation").build_candidates(context, _noop)
    assert "wide teacher" in candidate.note
    assert candidate.val_score >= 0.5


def test_distillation_weighs_teacher_and_labels_by_the_runs_alpha():
    # A teacher that is confidently wrong (every class shifted by one): with alpha = 1 the student
    # copies it and gains nothing on validation; with alpha = 0 the training rows teach through their
    # labels. (No generated inputs here: the teacher would label those either way.)
    teacher_context = _context(epochs=30)
    teacher = teacher_context.module
    train_module(teacher, teacher_context.data, output_kind="classes", config=TrainConfig(epochs=30, seed=1))
    teacher.eval()

    def wrong_teacher(x):
        with torch.no_grad():
            return torch.roll(teacher(x), shifts=1, dims=1) * 5

    scores = {}
    for alpha in (0.0, 1.0):
        context = _context()
        context.train_config = TrainConfig(epochs=60, patience=60, lr=0.05, seed=0)
        context.teacher_fn, context.teacher_label, context.params = wrong_teacher, "wrong", {"alpha": alpha}
        context.sample_inputs = lambda n, rng: np.empty((0, 4))
        (candidate,) = get_strategy("distillation").build_candidates(context, _noop)
        scores[alpha] = candidate.val_score
    assert scores[0.0] > scores[1.0] + 0.1, scores


def test_optimization_keeps_the_score_within_tolerance():
    context = _context(epochs=5)
    (candidate,) = get_strategy("optimization").build_candidates(context, _noop)
    floor = candidate.details["floor"]
    assert candidate.val_score >= floor
    assert candidate.runtime in {"torch_fp32", "torch_int8", "onnx_fp32", "onnx_int8"}
    labels = {row["variant"] for row in candidate.details["variants"]}
    assert {"current onnx_fp32", "current onnx_int8", "current torch_int8"} <= labels


def test_distillation_teaches_on_perturbed_training_rows_or_fresh_samples():
    from improvement.strategies.distillation import extra_inputs_for

    context = _context()
    X = context.data.X_train  # 200 rows of 4 features
    batch = extra_inputs_for(context)(1)
    assert batch.shape == (600, 4)  # three perturbed copies of each row, for the teacher to label
    nearest = np.abs(batch[:, None] - X[None]).max(axis=2).min(axis=1)  # (600,)
    assert np.all(nearest > 0)  # none is a training row verbatim
    assert np.median(nearest) < np.median(np.abs(X[:, None] - X[None]).max(axis=2).mean(axis=1))
    make = extra_inputs_for(context)
    assert not np.array_equal(make(1), make(2))  # fresh perturbations every epoch

    drawn = []

    def sample_inputs(n, rng):
        drawn.append(n)
        return rng.normal(size=(n, 4))

    context.sample_inputs = sample_inputs
    fresh = extra_inputs_for(context)(1)
    assert fresh.shape == (200, 4) and fresh.dtype == np.float32 and drawn == [200]


class _KeptCheckpoints:
    """A run's checkpoint store kept in memory: what a later attempt of the same run would load."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[dict, dict]] = {}

    def load(self, key):
        return self.saved.get(key)

    def save(self, key, state, meta, *, final=False):
        self.saved[key] = ({k: v.clone() for k, v in state.items()}, {**meta, "final": final})


def test_an_attempt_after_a_dead_worker_keeps_a_finished_refit_and_resumes_an_unfinished_one():
    from improvement.strategies.architecture import REFIT_CHECKPOINT

    store = _KeptCheckpoints()

    def attempt():
        context = _context()
        context.time_budget_s, context.params, context.checkpoints = 30.0, {"trials": 2}, store
        lines: list[str] = []
        context.log = lines.append
        (candidate,) = get_strategy("architecture").build_candidates(context, _noop)
        return candidate, lines

    first, _ = attempt()
    state, meta = store.saved[REFIT_CHECKPOINT]
    assert meta["final"] and meta["val_score"] == first.details["refit"]["val_score"]
    assert meta["trial"] == first.details["best_trial"]

    # The worker died after the refit finished: the next attempt keeps it as it was.
    again, lines = attempt()
    assert any("refit: finished by an earlier attempt" in line for line in lines), lines
    assert again.details["refit"]["val_score"] == pytest.approx(meta["val_score"])

    # The worker died during the refit: the next attempt goes on from its best weights so far.
    store.saved[REFIT_CHECKPOINT] = (state, {**meta, "final": False, "seconds": 4.0, "epoch": 2})
    resumed, lines = attempt()
    assert any(line.startswith("refit: resuming") and "epoch 2" in line for line in lines), lines
    assert resumed.details["refit"]["seconds"] >= 4.0  # the earlier attempt's seconds count
    assert store.saved[REFIT_CHECKPOINT][1]["final"]
