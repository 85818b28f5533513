"""Writes of the improvement app that are not a run's own lifecycle (see runs.py)."""

from __future__ import annotations

from collections.abc import Iterator

from django.db import transaction

from hormones.services import hormones_ensure
from improvement.models import ImprovementConfig
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.evaluation import algorithm_evaluate, candidate_evaluate
from models_registry.models import NeuralModel, Task
from models_registry.nn.training import TrainConfig
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import model_create, task_create_builtin, version_create
from models_registry.training import neural_fit

# A short, fixed training budget for the seeded models: deliberately weak, but not random.
SEED_TRAIN = TrainConfig(epochs=3, batch_size=64, lr=3e-3, patience=3, seed=0)


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
            version = seed_weak_version(model=model, genome=spec.weak_genome)
            yield f"model {model}: v{version.number} scores {version.score:.4f} (deliberately weak)"
        else:
            yield f"model {model}: exists ({model.versions.count()} versions)"
    yield predictor_seed()


def predictor_seed() -> str:
    """Create (or refresh) the improvement-predictor task once the run history is long enough."""
    from improvement.predictor import PREDICTOR_TASK_SLUG, gain_predictor, history_load

    config = ImprovementConfig.load()
    n = len(history_load())
    if n < config.predictor_min_history:
        return (f"task {PREDICTOR_TASK_SLUG}: not yet ({n} < {config.predictor_min_history} finished runs); "
                "the loop creates it once the history is long enough")
    return f"task {PREDICTOR_TASK_SLUG}: {gain_predictor(config=config).note}"


def seed_weak_version(*, model: NeuralModel, genome: dict):
    module, _ = neural_fit(model.task, genome, config=SEED_TRAIN)
    evaluation = candidate_evaluate(task=model.task, module=module)
    return version_create(
        model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
        activate=True, note="seeded weak model", reason="initial version",
    )
