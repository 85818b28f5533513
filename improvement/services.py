"""Writes of the improvement app that are not a run's own lifecycle (see runs/lifecycle.py).

* ``config_update`` — the one service that changes the loop's configuration; admin, the REST
  API, the panel and the specification's facade all call it, so every edit is validated the
  same way and announced with ``config.changed``.
* ``demo_seed`` — the demo ``make run`` seeds: three built-in tasks with weak models.
* ``task_first_model`` — every new task's first model, its first version trained by a worker.
* ``task_upload_create`` — an upload through the API: the task now, its algorithm's evaluation
  (``task_algorithm_queue``) and its first model by workers; ``task_algorithms_requeue`` queues
  again the evaluations whose worker died.
* ``task_job_queue`` — a generator task's creation, accepted now and done by a worker
  (``models_registry.task_jobs``); ``task_jobs_requeue`` queues again the jobs whose worker died.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django_q.tasks import async_task

from events.payloads import ConfigChangedPayload
from events.publisher import publish
from hormones.services import hormones_ensure
from improvement.models import ImprovementConfig
from improvement.predictor import (
    PREDICTOR_TASK_SLUG,
    gain_predictor,
    history_load,
    history_minimum,
    history_shortfall,
)
from models_registry.choices import OutputKind
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.upload import UploadLimits
from models_registry.models import NeuralModel, Task, TaskCreationJob
from models_registry.nn.families import default_genome, family_for
from models_registry.nn.genome import GenomeError, genome_summary, validate_genome
from models_registry.nn.training import TrainConfig
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import model_create, task_create_builtin, task_create_from_upload
from models_registry.task_algorithm import (
    task_algorithm_ensure,
    task_algorithm_evaluate,
    task_algorithms_reconcile,
)
from models_registry.task_jobs import task_job_create, task_jobs_reconcile
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
            measured = algorithm_latest_sample(task=task)
            scores = f"; algorithm scores {measured.score:.4f}" if measured is not None else ""
            yield f"task {task.slug}: created ({task.n_train}/{task.n_val}/{task.n_test} train/val/test){scores}"
        # Task creation measures the algorithm; this catches a task whose measurement failed
        # then (or that predates it), and leaves a measured one alone.
        if algorithm_latest_sample(task=task) is None:
            sample = task_algorithm_evaluate(task=task)
            yield (f"task {task.slug}: algorithm scores {sample.score:.4f}" if sample is not None
                   else f"task {task.slug}: {task.warnings[-1]}")
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
    if history_shortfall(n, config):
        return (f"task {PREDICTOR_TASK_SLUG}: not yet ({n} < {history_minimum(config)} finished runs); "
                "the loop creates it once the history is long enough")
    return f"task {PREDICTOR_TASK_SLUG}: {gain_predictor(config=config).note}"


# --------------------------------------------------------------------------- a task's first model

FIRST_MODEL_NAME = "auto"
#: The first version's training: brief (the loop improves it), bounded in time whatever the data.
BOOTSTRAP_TRAIN = TrainConfig(epochs=10, batch_size=64, lr=3e-3, patience=4, seed=0, max_seconds=60.0)


def first_genome(task: Task) -> dict:
    """A modest genome for the task's data (``models_registry.nn.families.default_genome``)."""
    return default_genome(task.input_shape, task.output_kind, task.n_outputs,
                          named_columns=bool(task.feature_names))


def genome_for_task(task: Task, genome: dict) -> dict:
    """A user's genome fitted to the task: its ``input_shape`` and outputs are the task's; the kind must suit it.

    Raises ``GenomeError`` naming the field when it cannot serve the task.
    """
    kinds = family_for(task.input_shape, task.output_kind, named_columns=bool(task.feature_names))
    if not isinstance(genome, dict):
        raise GenomeError("genome", f"must be a JSON object, got {type(genome).__name__}")
    if genome.get("kind") not in kinds:
        raise GenomeError("kind", f"must be one of {', '.join(kinds)} for this task, got {genome.get('kind')!r}")
    fitted = {**genome, "input_shape": list(task.input_shape)}
    if task.output_kind != OutputKind.RECONSTRUCTION:
        fitted["output_dim"] = task.n_outputs
    return validate_genome(fitted)


def model_bootstrap_queue(*, task: Task, genome: dict | None = None) -> NeuralModel:
    """Give a new task its first neural model: created now, its first version trained by a worker.

    No genome needed: by default it comes from the data's shape (an image gets a small residual
    CNN, a signal a 1-D CNN, a table an MLP, reconstruction an autoencoder). The worker trains
    it briefly and fills a free slot at once, so the loop starts improving it.
    """
    source = "the given genome" if genome is not None else "the data's shape"
    genome = validate_genome(genome) if genome is not None else first_genome(task)
    model = model_create(task=task, name=FIRST_MODEL_NAME, description=f"First model, from {source}: "
                                                                        f"{genome_summary(genome)}")
    transaction.on_commit(lambda: async_task(BOOTSTRAP_TASK, model.pk, genome, task_name=f"bootstrap-{model.pk}",
                                             group="improvement"))
    return model


BOOTSTRAP_TASK = "improvement.tasks.model_bootstrap"


def model_bootstrap(*, model: NeuralModel, genome: dict | None = None) -> str:
    """Train the model's first version (once: a model with versions is left alone). Returns what was done.

    The task's algorithm is measured first if it has not been yet (an upload's evaluation still
    queued or running: ``task_algorithm_ensure``), so the version's activation decides serving
    with both scores.
    """
    if model.versions.exists():
        return f"{model}: has versions already"
    task_algorithm_ensure(task=model.task)
    genome = genome or first_genome(model.task)
    version = version_seed(model=model, genome=genome, config=BOOTSTRAP_TRAIN,
                           note=f"first version: {genome_summary(genome)}")
    return f"{model}: v{version.number} gate {version.metric} {version.score:.4f}"


def task_first_model(*, task: Task, genome: dict | None = None) -> NeuralModel | None:
    """Every new task gets a first model, once (a task with a model is left alone; returns None).

    A given genome is fitted to the task; one that cannot serve it is named in the task's
    warnings and the first model is built from the data's shape instead — not fatal.
    """
    if task.neural_models.exists():
        return None
    fitted = None
    with transaction.atomic():
        if genome is not None:
            try:
                fitted = genome_for_task(task, genome)
            except GenomeError as exc:
                task.warnings = [*task.warnings, f"genome: {exc}; the first model is built from the data's shape"]
                Task.objects.filter(pk=task.pk).update(warnings=task.warnings)
        return model_bootstrap_queue(task=task, genome=fitted)


# ------------------------------------------------------------------------ an upload's creation

ALGORITHM_TASK = "improvement.tasks.task_algorithm_evaluate"


def task_upload_create(
    *, name: str, filename: str, content: bytes, slug: str = "", description: str = "",
    target_column: str | None = None, output_kind: str | None = None, algorithm_path: str = "",
    limits: UploadLimits | None = None, seed: int = 0, metric: str | None = None, genome: dict | None = None,
    created_by: User | None = None, inputs_key: str = "X", targets_key: str = "y",
) -> Task:
    """An upload through the API (or the panel's new-task form): the task now, usable at once; the heavy
    work queued for workers.

    The request parses the file, fixes the splits and writes the dataset and the row
    (``task_create_from_upload``), and creates the first model; the algorithm's evaluation
    (fitting it can take tens of seconds on a large table) and the first version's training are
    queued. Whichever worker comes first evaluates the algorithm: the first version's training
    starts with it (``model_bootstrap``), so that version's activation decides serving with both
    scores. The evaluation is queued last, once the first model's warnings are written.
    """
    task = task_create_from_upload(
        name=name, filename=filename, content=content, slug=slug, description=description,
        target_column=target_column, output_kind=output_kind, algorithm_path=algorithm_path, limits=limits,
        seed=seed, metric=metric, created_by=created_by, evaluate_algorithm=False, inputs_key=inputs_key,
        targets_key=targets_key,
    )
    task_first_model(task=task, genome=genome)
    task_algorithm_queue(task=task)
    return task


def task_algorithm_queue(*, task: Task) -> None:
    """Queue the evaluation of a task created with its algorithm's evaluation pending, once the row commits."""
    transaction.on_commit(partial(task_algorithm_enqueue, task_id=task.pk))


def task_algorithm_enqueue(*, task_id: int) -> None:
    async_task(ALGORITHM_TASK, task_id, task_name=f"algorithm-{task_id}", group="registry")


def _requeue(reconcile: Callable[[], Iterable[int]], enqueue: Callable[[int], None], line: str) -> list[str]:
    """Mark work whose worker vanished as pending again (``reconcile``) and enqueue each once that commits;
    one ``line`` (formatted with the id) per item."""
    with transaction.atomic():
        ids = list(reconcile())
        for pk in ids:
            transaction.on_commit(partial(enqueue, pk))
    return [line.format(pk) for pk in ids]


def task_algorithms_requeue() -> list[str]:
    """Queue again the algorithm evaluations left unfinished too long (``task_algorithms_reconcile``)."""
    return _requeue(task_algorithms_reconcile, lambda pk: task_algorithm_enqueue(task_id=pk),
                    "task #{}: algorithm evaluation requeued (unfinished after the queue's timeout)")


# -------------------------------------------------------------------- a generator task's creation

TASK_JOB_TASK = "improvement.tasks.task_create_job"


def task_job_queue(
    *, name: str, algorithm_path: str, sampler_spec: dict, slug: str = "", description: str = "",
    latency_budget_ms: float = 200.0, metric: str | None = None, split_seed: int = 0, genome: dict | None = None,
    created_by: User | None = None, limits: UploadLimits | None = None,
) -> TaskCreationJob:
    """Accept a generator task's creation (``task_job_create`` checks what is cheap) and queue it on commit.

    The worker (``improvement.tasks.task_create_job``) labels the samples, creates the task and
    gives it its first model (``task_first_model``); the job row reports its progress.
    """
    with transaction.atomic():
        job = task_job_create(
            name=name, algorithm_path=algorithm_path, sampler_spec=sampler_spec, slug=slug, description=description,
            latency_budget_ms=latency_budget_ms, metric=metric, split_seed=split_seed, genome=genome,
            created_by=created_by, limits=limits,
        )
        transaction.on_commit(partial(task_job_enqueue, job_id=job.pk))
    return job


def task_job_enqueue(*, job_id: int) -> None:
    async_task(TASK_JOB_TASK, job_id, task_name=f"task-job-{job_id}", group="registry")


def task_jobs_requeue() -> list[str]:
    """Queue again the creation jobs whose worker died (``task_jobs_reconcile``); one line per job."""
    return _requeue(task_jobs_reconcile, lambda pk: task_job_enqueue(job_id=pk),
                    "task job #{} requeued (its worker sent no heartbeat)")
