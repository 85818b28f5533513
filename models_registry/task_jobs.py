"""A generator task's creation as a job: accepted by the request, labelled and created by a worker.

The request (``task_job_create``) checks everything cheap — the sampler spec and the numbers it
would produce, the algorithm path against the allowlist (imported, never called), a free slug —
and stores a ``TaskCreationJob``. A worker then runs ``task_job_execute``:

claim (a conditional UPDATE) → label in batches, progress written at most every
``PROGRESS_INTERVAL_S`` → create the task (the job is linked in the task row's own transaction)
→ the caller's ``after_create`` (the first model) → done. A refusal marks the job failed with a
message fit for the user; the creation services leave no task row and no dataset file behind.

This module owns the job's state machine (``TaskCreationJob`` lists the transitions); every
change is published as ``task_job.progress``. A worker that dies leaves its job running with a
heartbeat that stops: after ``PLASTICITY_HEARTBEAT_TIMEOUT`` the job may be claimed again
(``task_job_claim``), and ``task_jobs_reconcile`` puts it back to pending for the queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from events.payloads import TaskJobPayload
from events.publisher import publish
from models_registry.choices import TaskJobStatus
from models_registry.data.errors import DatasetError, ImplementationError
from models_registry.data.upload import SamplerSpec, UploadLimits, parse_sampler_spec
from models_registry.errors import RegistryError
from models_registry.models import Task, TaskCreationJob
from models_registry.services import (
    generator_check,
    generator_label,
    task_create_from_generated,
    task_slug_check,
)

logger = logging.getLogger(__name__)

#: Progress is written (and published) at most this often: a few writes per second at most.
PROGRESS_INTERVAL_S = 0.25
#: Claims of one job in all: a job whose worker keeps dying (the algorithm kills it) ends failed.
MAX_ATTEMPTS = 3
#: Where the progress bar stands when labelling ends and the task is being written, and when the
#: first model is being created (labelling is most of the work).
CREATING_AT = 0.85
FIRST_MODEL_AT = 0.95
ACTIVE = (TaskJobStatus.PENDING, TaskJobStatus.RUNNING)
#: The spec was bounded when the job was accepted (the limits in force then); the worker rebuilds it
#: without bounding it again, so limits lowered meanwhile do not fail a job already accepted.
_ACCEPTED = UploadLimits(max_rows=2**62, max_columns=2**62, max_values=2**62)


class AfterCreate(Protocol):
    """Given the new task and the job's genome, give the task its first model (idempotent)."""

    def __call__(self, *, task: Task, genome: dict | None) -> object: ...


class JobLost(Exception):
    """Raised inside a worker whose job was claimed by another worker (its heartbeat had gone stale)."""


def _payload(job: TaskCreationJob) -> TaskJobPayload:
    return TaskJobPayload(
        job_id=job.pk, slug=job.slug, status=job.status, progress=float(job.progress), message=job.message,
        task=job.task.slug if job.task_id and job.task is not None else None, error=job.error,
    )


def _announce(job_id: int) -> None:
    publish("task_job.progress", _payload(TaskCreationJob.objects.select_related("task").get(pk=job_id)))


# --------------------------------------------------------------------------------- the request


def task_job_create(
    *, name: str, algorithm_path: str, sampler_spec: dict, slug: str = "", description: str = "",
    latency_budget_ms: float = 200.0, metric: str | None = None, split_seed: int = 0, genome: dict | None = None,
    created_by: User | None = None, limits: UploadLimits | None = None,
) -> TaskCreationJob:
    """Check what is cheap, then store a pending job (the caller queues it on commit).

    Refused here, as the synchronous creation refused it: a malformed or too large spec
    (``limits``), an algorithm path outside the allowlist or that cannot be imported, a slug
    that is a task's already or that a pending or running job will give its task.
    """
    generator_check(algorithm_path=algorithm_path, sampler_spec=sampler_spec, limits=limits)
    slug = task_slug_check(slug=slug or name)
    with transaction.atomic():
        other = TaskCreationJob.objects.filter(slug=slug, status__in=ACTIVE).values_list("pk", flat=True).first()
        if other is not None:
            raise RegistryError(f"slug: a task named {slug!r} is being created already (task job #{other})")
        job = TaskCreationJob.objects.create(
            name=name, slug=slug, description=description, algorithm_path=algorithm_path,
            sampler_spec=sampler_spec, latency_budget_ms=latency_budget_ms, metric=metric or "",
            split_seed=split_seed, genome=genome, created_by=created_by, message="waiting for a worker",
        )
        publish("task_job.progress", _payload(job))
    return job


# ---------------------------------------------------------------------------------- the worker


def _stale_cutoff(timeout_s: float | None = None) -> datetime:
    return timezone.now() - timedelta(seconds=timeout_s or settings.PLASTICITY_HEARTBEAT_TIMEOUT)


def task_job_claim(*, job_id: int, worker: str, timeout_s: float | None = None) -> TaskCreationJob | None:
    """pending → running, or a stale running job (its worker died) → running for ``worker``.

    A conditional UPDATE: of two deliveries of one job, only one claims it; the other gets None.
    A stale job that has had ``MAX_ATTEMPTS`` claims is not claimed again but ends failed.
    """
    now = timezone.now()
    stale = Q(status=TaskJobStatus.RUNNING, heartbeat_at__lt=_stale_cutoff(timeout_s))
    with transaction.atomic():
        claimed = TaskCreationJob.objects.filter(Q(status=TaskJobStatus.PENDING) | stale, pk=job_id,
                                                 attempts__lt=MAX_ATTEMPTS).update(
            status=TaskJobStatus.RUNNING, worker=worker[:120], attempts=F("attempts") + 1, heartbeat_at=now,
            started_at=now, progress=0.0, message="starting",
        )
        if claimed:
            _announce(job_id)
            return TaskCreationJob.objects.select_related("task").get(pk=job_id)
    _give_up(job_id=job_id, stale=stale)
    return None


def _give_up(*, job_id: int, stale: Q) -> None:
    """A stale job that has had all its claims ends failed."""
    with transaction.atomic():
        if TaskCreationJob.objects.filter(stale, pk=job_id, attempts__gte=MAX_ATTEMPTS).update(
            status=TaskJobStatus.FAILED, finished_at=timezone.now(), message="failed",
            error=f"its worker stopped {MAX_ATTEMPTS} times without finishing",
        ):
            _announce(job_id)


class JobReporter:
    """Progress of one claimed job: written (with its heartbeat) at most every ``interval_s``.

    Each write is conditional on this worker still holding the job; when another worker has
    claimed it (this one looked dead), the write raises ``JobLost`` and this worker stops.
    """

    def __init__(self, job: TaskCreationJob, *, interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job, self.interval_s, self.clock = job, interval_s, clock
        self._last_write: float | None = None
        self.writes = 0

    def __call__(self, fraction: float, message: str) -> None:
        now = self.clock()
        if self._last_write is not None and now - self._last_write < self.interval_s:
            return
        self.flush(fraction, message)

    def flush(self, fraction: float, message: str) -> None:
        self._last_write = self.clock()
        job = self.job
        job.progress = max(job.progress, min(1.0, float(fraction)))
        job.message = message[:200]
        with transaction.atomic():
            if not _held(job).update(progress=job.progress, message=job.message, heartbeat_at=timezone.now()):
                raise JobLost(f"task job #{job.pk} is no longer held by {job.worker}")
            publish("task_job.progress", _payload(job))
        self.writes += 1

    def labelled(self, done: int, total: int) -> None:
        """``generate_dataset``'s progress callback: labelling fills the bar up to ``CREATING_AT``."""
        self(CREATING_AT * done / total, f"labelled {done:,} of {total:,} samples")


def _held(job: TaskCreationJob):
    """The job's row, while ``job.worker`` still holds it running (what every write of a worker is conditional on)."""
    return TaskCreationJob.objects.filter(pk=job.pk, status=TaskJobStatus.RUNNING, worker=job.worker)


def _link(job: TaskCreationJob, task: Task) -> None:
    """Inside the task row's transaction: the job points at its task, or (job lost) the task is undone."""
    if not _held(job).update(task=task, progress=CREATING_AT, heartbeat_at=timezone.now()):
        raise JobLost(f"task job #{job.pk} is no longer held by {job.worker}; task {task.slug} is not kept")
    job.task = task


def _label_limits(spec: SamplerSpec) -> UploadLimits:
    """Labels may hold as many numbers as the accepted inputs, or the default bound if that is more."""
    inputs = spec.n_samples * math.prod(spec.shape)
    return UploadLimits(max_values=max(UploadLimits().max_values, inputs))


def _finish(job: TaskCreationJob, *, status: str, message: str, error: str = "") -> bool:
    with transaction.atomic():
        ended = _held(job).update(status=status, progress=1.0 if status == TaskJobStatus.DONE else job.progress,
                                  message=message[:200], error=error, finished_at=timezone.now())
        if ended:
            _announce(job.pk)
    return bool(ended)


def task_job_execute(
    *, job_id: int, worker: str, after_create: AfterCreate | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> str:
    """Claim the job, label its samples, create its task, call ``after_create``; returns what was done.

    A job already linked to its task (an earlier attempt's worker died after creating it) is
    not labelled again: only what was left is done. ``after_create`` should be idempotent.
    """
    job = task_job_claim(job_id=job_id, worker=worker)
    if job is None:
        return f"task job #{job_id}: not claimable (taken, finished, or its worker is still alive)"
    reporter = JobReporter(job, interval_s=progress_interval_s)
    try:
        task = job.task
        if task is None:
            reporter.flush(0.0, "labelling samples")
            spec = parse_sampler_spec(job.sampler_spec, limits=_ACCEPTED)
            data = generator_label(algorithm_path=job.algorithm_path, spec=spec, seed=job.split_seed,
                                   progress=reporter.labelled, limits=_label_limits(spec))
            reporter.flush(CREATING_AT, "writing the task's dataset and measuring its algorithm")
            task = task_create_from_generated(
                name=job.name, algorithm_path=job.algorithm_path, sampler_spec=job.sampler_spec, data=data,
                slug=job.slug, description=job.description, seed=job.split_seed,
                latency_budget_ms=job.latency_budget_ms, metric=job.metric or None,
                on_row=lambda created: _link(job, created), created_by=job.created_by,
            )
        if after_create is not None:
            reporter.flush(FIRST_MODEL_AT, "creating the first model")
            after_create(task=task, genome=job.genome)
    except JobLost as exc:
        logger.warning("%s", exc)
        return str(exc)
    except (DatasetError, ImplementationError, RegistryError) as exc:
        return _fail(job, str(exc))
    except Exception as exc:
        logger.exception("task job #%s failed", job_id)
        return _fail(job, f"{type(exc).__name__}: {str(exc)[:500]}")
    if not _finish(job, status=TaskJobStatus.DONE, message=f"task {task.slug} created"):
        return f"task job #{job_id}: no longer held by {worker}"
    return f"task job #{job_id}: task {task.slug} created ({task.n_samples} samples)"


def _fail(job: TaskCreationJob, error: str) -> str:
    if job.task is not None:  # only the first model's creation can fail after the task exists
        error = f"task {job.task.slug} was created, but its first model was not: {error}"
    _finish(job, status=TaskJobStatus.FAILED, message="failed", error=error)
    return f"task job #{job.pk}: failed: {error}"


def task_jobs_reconcile(*, timeout_s: float | None = None) -> list[int]:
    """Running jobs whose heartbeat is stale go back to pending; returns their ids for the caller to queue.

    A job that has had ``MAX_ATTEMPTS`` claims ends failed instead (``task_job_claim`` says why).
    """
    cutoff = _stale_cutoff(timeout_s)
    requeued = []
    stale = Q(status=TaskJobStatus.RUNNING, heartbeat_at__lt=cutoff)
    for job in TaskCreationJob.objects.filter(stale):
        if job.attempts >= MAX_ATTEMPTS:
            _give_up(job_id=job.pk, stale=stale)
            continue
        with transaction.atomic():
            moved = TaskCreationJob.objects.filter(stale, pk=job.pk).update(
                status=TaskJobStatus.PENDING, worker="",
                message=f"requeued: worker {job.worker or '?'} sent no heartbeat",
            )
            if moved:
                _announce(job.pk)
                requeued.append(job.pk)
    return requeued
