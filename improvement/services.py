"""Writes of the improvement app that are not a run's own lifecycle (see runs/lifecycle.py).

* ``config_update`` — the one service that changes the loop's configuration; admin, the REST
  API, the panel and the specification's facade all call it, so every edit is validated the
  same way and announced with ``config.changed``.
* ``demo_seed`` — the demo ``make run`` seeds: three built-in tasks with weak models.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from events.payloads import ConfigChangedPayload
from events.publisher import publish
from hormones.services import hormones_ensure
from improvement.models import ImprovementConfig
from improvement.predictor import PREDICTOR_TASK_SLUG, gain_predictor, history_load
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.evaluation import algorithm_evaluate
from models_registry.models import NeuralModel, Task
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import model_create, task_create_builtin
from models_registry.training import version_seed

CONFIG_READ_ONLY = ("id", "pk", "updated_at")


def config_update(**fields: Any) -> ImprovementConfig:
    """Validate and save configuration fields; raises ``ValidationError`` naming each bad field."""
    with transaction.atomic():
        row = ImprovementConfig.load()
        unknown = [name for name in fields if not hasattr(row, name) or name in CONFIG_READ_ONLY]
        if unknown:
            raise ValidationError({name: "unknown configuration field" for name in unknown})
        for name, value in fields.items():
            setattr(row, name, value)
        row.full_clean()
        row.save()
        publish("config.changed", ConfigChangedPayload(changed={name: getattr(row, name) for name in fields}))
    return row


def demo_seed(*, interval: float = 60.0, budget: float = 150.0) -> Iterator[str]:
    hormones_ensure()
    with transaction.atomic():
        if not ImprovementConfig.objects.filter(pk=1).exists():
            ImprovementConfig.objects.create(pk=1, improvement_interval=interval, run_time_budget_s=budget)
            yield f"configuration created (improvement_interval={interval:g} s, run budget {budget:g} s)"
    for key, spec in BUILTIN_DATASETS.items():
        task = Task.objects.filter(slug=spec.slug).first()
        if task is None:
            task = task_create_builtin(key=key)
            yield f"task {task.slug}: created ({task.n_train}/{task.n_val}/{task.n_test} train/val/test)"
        if algorithm_latest_sample(task=task) is None:
            sample = algorithm_evaluate(task=task)
            yield f"task {task.slug}: algorithm scores {sample.score:.4f}"
        model = NeuralModel.objects.filter(task=task, name="baseline").first() or model_create(
            task=task, name="baseline", description="Seeded weak model; the loop improves it."
        )
        if not model.versions.exists():
            version = version_seed(model=model, genome=spec.weak_genome)
            yield f"model {model}: v{version.number} scores {version.score:.4f} (deliberately weak)"
        else:
            yield f"model {model}: exists ({model.versions.count()} versions)"
    yield predictor_seed()


def predictor_seed() -> str:
    """Create (or refresh) the improvement-predictor task once the run history is long enough."""
    config = ImprovementConfig.load()
    n = len(history_load())
    if n < config.predictor_min_history:
        return (f"task {PREDICTOR_TASK_SLUG}: not yet ({n} < {config.predictor_min_history} finished runs); "
                "the loop creates it once the history is long enough")
    return f"task {PREDICTOR_TASK_SLUG}: {gain_predictor(config=config).note}"
