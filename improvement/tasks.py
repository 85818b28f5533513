"""django-q2 tasks: thin wrappers that take ids and call one service.

Argument names never collide with django-q2's own options (timeout, group, hook, ...),
which ``async_task`` would silently swallow.
"""

from __future__ import annotations

import uuid

from django.db import close_old_connections

from improvement import services
from improvement.models import CycleRecord
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import Heartbeat, run_pick, worker_name
from improvement.runs.search import search_candidate_execute
from improvement.scheduler import loop
from models_registry.models import NeuralModel, TaskCreationJob
from models_registry.task_algorithm import task_algorithm_execute
from models_registry.task_jobs import task_job_execute


def run_improvement(run_id: int) -> str:
    """Execute the highest-priority queued run (``run_id`` unless a more urgent one waits)."""
    close_old_connections()
    for _ in range(5):
        picked = run_pick(preferred=run_id)
        result = run_execute(run_id=picked)
        if result != "skipped" or picked == run_id:
            return result
        # Another worker took the picked run first: pick again.
    return run_execute(run_id=run_id)


def evaluate_search_candidate(candidate_id: int) -> str:
    close_old_connections()
    return search_candidate_execute(candidate_id=candidate_id)


def loop_tick() -> dict:
    close_old_connections()
    return loop.loop_tick()


def cycle_after_run() -> int | None:
    """A run ended: fill its freed slot now (enqueued on commit by the run's worker). Returns the cycle id."""
    close_old_connections()
    record: CycleRecord | None = loop.cycle_after_run()
    return record.pk if record is not None else None


def model_bootstrap(model_id: int, genome: dict | None = None) -> str:
    """A new task's first model: train its first version, then fill the free slot so improving starts."""
    close_old_connections()
    model = NeuralModel.objects.select_related("task").filter(pk=model_id).first()
    if model is None:
        return f"model #{model_id} no longer exists"
    done = services.model_bootstrap(model=model, genome=genome)
    loop.cycle_after_run()
    return done


def task_create_job(job_id: int) -> str:
    """A generator task's creation (``POST /api/tasks`` answered 202): label, create, queue its first model."""
    close_old_connections()
    worker = f"{worker_name()}/{uuid.uuid4().hex[:8]}"  # one claim: a later claim by this process differs
    # The heartbeat keeps a slow labelling batch (or the algorithm's evaluation) from looking dead.
    with Heartbeat(job_id, worker, model=TaskCreationJob):
        return task_job_execute(job_id=job_id, worker=worker, after_create=services.task_first_model)


def task_algorithm_evaluate(task_id: int) -> str:
    """An uploaded task's algorithm (``POST /api/tasks`` answered 201): fit and score it on the gate and test splits."""
    close_old_connections()
    return task_algorithm_execute(task_id=task_id)
