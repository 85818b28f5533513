"""Each built-in task trains a tiny model to a sane score in a few seconds."""

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
    module, result = neural_fit(task, genome, config=TrainConfig(epochs=60, seed=0, patience=10, max_seconds=8.0,
                                                                 lr_schedule="cosine"))
    evaluation = candidate_evaluate(task=task, module=module, measure=False)
    assert evaluation.score >= floor, (key, evaluation.score)
    assert result.seconds < 20
