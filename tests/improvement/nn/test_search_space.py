"""The architecture search space and the in-process Optuna runner (no database)."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest
import torch

from improvement.nn.search_space import SearchSpace, genome_params, suggest
from improvement.nn.trials import LocalTrialRunner, best_of, study_sampler, train_trial
from models_registry.nn.genome import build_module
from models_registry.nn.training import TrainData

SPACES = [
    SearchSpace((1, 8, 8), "classes", 10, "image"),
    SearchSpace((3, 28, 20), "classes", 4, "image"),
    SearchSpace((128,), "classes", 10, "signal"),
    SearchSpace((3, 64), "values", 2, "signal"),
    SearchSpace((10,), "classes", 3, "table"),
    SearchSpace((24,), "values", 1, "table"),
    SearchSpace((64,), "reconstruction", 64, "table", code_dim=8),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.input_kind}-{s.input_shape}-{s.output_kind}")
def test_every_sampled_candidate_is_a_valid_buildable_genome_with_its_training_settings(space):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    families = set()
    for _ in range(25):
        trial = study.ask()
        spec = suggest(trial, space)
        families.add(spec.genome["kind"])
        module = build_module(spec.genome, seed=0).eval()
        with torch.no_grad():
            out = module(torch.zeros(2, *space.input_shape))
        expected = (2, *space.input_shape) if space.output_kind == "reconstruction" else (2, space.output_dim)
        assert tuple(out.shape) == expected
        assert 3e-4 <= spec.lr <= 1e-2 and spec.batch_size in (32, 64, 128, 256) and spec.epochs >= 20
        assert spec.augment in ("none", "shift", "noise", "scale", "mix")
        if space.output_kind != "classes":
            assert spec.label_smoothing == 0.0
        study.tell(trial, 0.0)
    assert families == set(space.families), "every family of the input kind is reachable"


def test_the_families_follow_the_input_kind():
    assert SPACES[0].families == ("cnn", "mlp")
    assert SPACES[2].families == ("conv1d", "transformer", "mlp")
    assert SPACES[4].families == ("mlp", "transformer")
    assert SPACES[6].families == ("autoencoder",)


def test_a_search_can_start_from_the_active_genome():
    space = SPACES[4]
    parent = {"kind": "mlp", "input_shape": [10], "output_dim": 3, "hidden": [64, 32], "activation": "relu",
              "dropout": 0.1, "norm": "none"}
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(genome_params(parent, space))
    spec = suggest(study.ask(), space)
    assert spec.genome == build_module(parent).genome
    assert genome_params({**parent, "hidden": [2]}, space) is None  # outside the space's widths


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, size=(3, 10))
    y = np.arange(400) % 3
    X = (centers[y] + rng.normal(0, 1.5, size=(400, 10))).astype(np.float32)
    return TrainData(X[:300], y[:300], X[300:], y[300:])


def test_the_local_runner_asks_tells_and_returns_the_best_trial():
    data, space = _blobs(), SPACES[4]

    def train(spec, index):
        return train_trial(spec, data=data, output_kind="classes", input_kind="table", metric="accuracy",
                           seed=index, max_seconds=2.0)

    seen = []
    runner = LocalTrialRunner(seed=0)
    results = runner.run(space, n_trials=5, deadline=time.monotonic() + 120, train=train,
                         progress=lambda done, total, result: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]
    assert len(runner.study.trials) == 5 and all(t.value is not None for t in runner.study.trials)
    best = best_of(results, ("score",))
    assert best.val_score == max(r.val_score for r in results) and best.val_score > 0.6
    assert best.get_module() is not None


def test_tpe_for_one_objective_and_nsga_ii_for_a_front():
    assert isinstance(study_sampler(("score",), seed=0), optuna.samplers.TPESampler)
    assert isinstance(study_sampler(("score", "latency", "size"), seed=0), optuna.samplers.NSGAIISampler)
