"""Small builders shared by tests: a synthetic CSV task and a trained version."""

from __future__ import annotations

import numpy as np

from models_registry.evaluation import candidate_evaluate
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.nn.training import TrainConfig
from models_registry.services import model_create, task_create_from_upload, version_create
from models_registry.training import neural_fit


def blobs_csv(n: int = 240, *, seed: int = 0, classes: int = 3, features: int = 4) -> bytes:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    y = np.arange(n) % classes
    X = centers[y] + rng.normal(0, 1.0, size=(n, features))
    header = ",".join([f"f{i}" for i in range(features)] + ["label"])
    lines = [header] + [",".join(f"{v:.5f}" for v in row) + f",c{label}" for row, label in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def csv_task(name: str = "blobs", **kwargs) -> Task:
    return task_create_from_upload(name=name, filename=f"{name}.csv", content=blobs_csv(**kwargs))


MLP = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [16], "activation": "relu",
       "dropout": 0.0, "norm": "none"}


def trained_version(model: NeuralModel, *, genome: dict | None = None, epochs: int = 5, seed: int = 0,
                    activate: bool = True, parent: ModelVersion | None = None,
                    measure: bool = False) -> ModelVersion:
    genome = genome or MLP
    module, _ = neural_fit(model.task, genome, config=TrainConfig(epochs=epochs, seed=seed, patience=epochs))
    evaluation = candidate_evaluate(task=model.task, module=module, measure=measure)
    return version_create(model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
                          activate=activate, parent=parent, note=f"test seed {seed}")


def model_with_versions(n: int = 2) -> tuple[NeuralModel, list[ModelVersion]]:
    task = csv_task()
    model = model_create(task=task, name="m")
    versions = []
    for i in range(n):
        versions.append(trained_version(model, seed=i, parent=versions[-1] if versions else None))
    return model, versions


def version_with_score(model: NeuralModel, score: float, *, latency_ms: float = 1.0, activate: bool = True,
                       genome: dict | None = None) -> ModelVersion:
    """A version whose recorded metrics are given (for scheduler tests that only read metrics)."""
    from models_registry.nn.evaluation import EvaluationResult
    from models_registry.nn.genome import build_module

    genome = genome or MLP
    module = build_module(genome)
    latency = {"p50_ms_b1": latency_ms * 0.8, "p95_ms_b1": latency_ms, "p99_ms_b1": latency_ms,
               "p50_ms_b256": latency_ms * 4, "p95_ms_b256": latency_ms * 5, "p99_ms_b256": latency_ms * 5}
    evaluation = EvaluationResult(score=score, metric="accuracy", latency=latency, n_parameters=10, size_bytes=100,
                                  n_rows=10)
    return version_create(model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
                          activate=activate, note=f"score {score}")
