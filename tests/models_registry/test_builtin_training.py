"""Each built-in task trains a tiny model to a sane score within its epoch and time budgets."""

from __future__ import annotations

import pytest

from models_registry.evaluation import candidate_evaluate
from models_registry.nn.training import TrainConfig
from models_registry.services import task_create_builtin
from models_registry.training import neural_fit

pytestmark = pytest.mark.django_db

CASES = {
    "pattern-recognition": ({"kind": "mlp", "input_shape": [1, 8, 8], "output_dim": 10, "hidden": [32],
                             "activation": "relu", "dropout": 0.0, "norm": "none"}, 0.85),
    "hormone-response": ({"kind": "mlp", "input_shape": [8], "output_dim": 5, "hidden": [32, 32],
                          "activation": "silu", "dropout": 0.0, "norm": "none"}, 0.85),
    "memory-consolidation": ({"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32],
                              "activation": "relu", "dropout": 0.0, "norm": "none"}, 0.75),
}


@pytest.mark.parametrize("key", list(CASES))
def test_builtin_task_trains_a_tiny_model_to_a_sane_score(key):
    genome, floor = CASES[key]
    task = task_create_builtin(key=key)
    config = TrainConfig(epochs=60, seed=0, patience=10, max_seconds=8.0, lr_schedule="cosine")
    module, result = neural_fit(task, genome, config=config)
    evaluation = candidate_evaluate(task=task, module=module, measure=False)
    assert evaluation.score >= floor, (key, evaluation.score)
    # The limits held, whatever the machine's speed: on a fast one the epochs or patience end it,
    # on a slow one the wall budget does. Judged on the run's own record, not on a clock here.
    assert result.stop_reason in ("epochs", "patience", "time_budget")
    assert 1 <= result.epochs_run == len(result.history) <= config.epochs
    # An epoch that began after the budget had run out (the previous epoch's record is past it)
    # is cut after its first step: it can only be the last one, and it says so.
    began_late = [event["epoch"] + 1 for event in result.history[:-1] if event["elapsed_s"] >= config.max_seconds]
    assert began_late in ([], [result.epochs_run]), (began_late, result.epochs_run)
    if began_late:
        assert result.stop_reason == "time_budget"
