"""A new task's algorithm evaluation: in the creating process, or by a worker once the task row commits.

Serving compares the latest gate samples of the algorithm and of the neural version, so a new
task's algorithm is measured on its gate and sealed test splits (``algorithm_evaluate``) as soon
as the task exists. Fitting it can take seconds to minutes (gradient boosting on a large
upload), so an upload through the API does not wait for it: the task is created with its
evaluation pending and a worker runs ``task_algorithm_execute``. Scripts, the demo seed and the
worker that creates a generator task evaluate in place (``task_algorithm_evaluate``).

This module owns ``Task.algorithm_evaluation`` (the model's docstring lists the transitions).
A failed evaluation never fails the task: it ends ``failed`` with a warning in the task's
``warnings`` saying why — an algorithm that cannot fit the data should not refuse a dataset
that neural models can still learn. Evaluating again is harmless (another pair of samples;
decisions read the latest), so a worker that dies is simply replaced: ``task_algorithms_reconcile``
returns the evaluations that have been pending or running longer than the queue lets a task run,
for the caller to queue again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from models_registry.choices import AlgorithmEvaluation
from models_registry.evaluation import algorithm_evaluate
from models_registry.models import ModelVersion, PerformanceSample, Task
from models_registry.serving.switching import serving_reevaluate
from models_registry.tuning import algorithm_tune

logger = logging.getLogger(__name__)

#: Claims of one evaluation in all: an algorithm whose evaluation keeps killing its worker ends failed.
MAX_ATTEMPTS = 3
#: Added to the queue's task timeout: an evaluation unfinished for that long is queued again.
LEASE_MARGIN_S = 60.0
FINISHED = (AlgorithmEvaluation.DONE, AlgorithmEvaluation.FAILED, AlgorithmEvaluation.NONE)


def evaluation_lease_s() -> float:
    """How long an evaluation may stay pending or running before the tick queues it again.

    django-q2 stops any task that runs longer than its timeout, so an evaluation claimed longer
    ago than that has no live worker; one pending that long lost its queue message or waited
    behind a long queue (a second message is then harmless: only one delivery claims it).
    """
    return float(settings.Q_CLUSTER["timeout"]) + LEASE_MARGIN_S


def _tune(task: Task) -> None:
    """Tune the algorithm on the validation split first (``models_registry.tuning``); a failure keeps its defaults."""
    try:
        algorithm_tune(task=task)
    except Exception:  # noqa: BLE001 - the defaults are still an algorithm to evaluate
        logger.exception("task %s: tuning the algorithm %s failed; its defaults are evaluated", task.slug,
                         task.algorithm_path)


def _evaluate(task: Task) -> tuple[PerformanceSample | None, str]:
    """The algorithm's gate sample (and its sealed test sample), or None and the warning that says why not."""
    _tune(task)
    try:
        return algorithm_evaluate(task=task), ""
    except Exception as exc:  # noqa: BLE001 - the task stays; only its algorithm's score is missing
        logger.exception("task %s: evaluating the algorithm %s failed", task.slug, task.algorithm_path)
        return None, (f"algorithm: {task.algorithm_path} could not be evaluated on the data ({type(exc).__name__}: "
                      f"{str(exc)[:200]}); until it is, serving has no algorithmic score to compare neural "
                      "versions with")


def _record(task: Task, *, outcome: str, warning: str = "", only_if: Q | None = None) -> bool:
    """Set the evaluation's ``outcome`` (and add ``warning``) if the row still matches ``only_if``; True if it did."""
    with transaction.atomic():
        current = Task.objects.select_for_update().filter(only_if or Q(), pk=task.pk).values_list(
            "warnings", flat=True).first()
        if current is None:
            return False
        fields: dict = {"algorithm_evaluation": outcome, "algorithm_evaluation_at": timezone.now()}
        if warning:
            fields["warnings"] = [*current, warning]
        Task.objects.filter(pk=task.pk).update(**fields)
    for name, value in fields.items():
        setattr(task, name, value)
    return True


def task_algorithm_evaluate(*, task: Task) -> PerformanceSample | None:
    """Evaluate the task's algorithm now and record the outcome; never raises.

    Returns the gate sample, or None when there is no algorithm or it could not be evaluated
    (then the task's ``warnings`` say why). Used where no request waits (see the module).
    """
    if not task.algorithm_path:
        _record(task, outcome=AlgorithmEvaluation.NONE)
        return None
    sample, warning = _evaluate(task)
    _record(task, outcome=AlgorithmEvaluation.DONE if sample is not None else AlgorithmEvaluation.FAILED,
            warning=warning)
    return sample


def task_algorithm_claim(*, task_id: int) -> Task | None:
    """pending → running: a conditional UPDATE, so of two deliveries only one claims; the other gets None."""
    claimed = Task.objects.filter(pk=task_id, algorithm_evaluation=AlgorithmEvaluation.PENDING).update(
        algorithm_evaluation=AlgorithmEvaluation.RUNNING, algorithm_evaluation_at=timezone.now(),
        algorithm_evaluation_attempts=F("algorithm_evaluation_attempts") + 1,
    )
    return Task.objects.get(pk=task_id) if claimed else None


def task_algorithm_execute(*, task_id: int) -> str:
    """A worker's evaluation: claim it, evaluate, record done or failed; returns what was done."""
    task = task_algorithm_claim(task_id=task_id)
    if task is None:
        return f"task #{task_id}: no pending algorithm evaluation (done, failed, taken by another worker, or no task)"
    return _run_claimed(task)


def _run_claimed(task: Task) -> str:
    sample, warning = _evaluate(task)
    outcome = AlgorithmEvaluation.DONE if sample is not None else AlgorithmEvaluation.FAILED
    if not _record(task, outcome=outcome, warning=warning,
                   only_if=Q(algorithm_evaluation=AlgorithmEvaluation.RUNNING)):
        return f"task {task.slug}: its algorithm evaluation ended meanwhile"
    if sample is None:
        return f"task {task.slug}: algorithm evaluation failed: {warning}"
    _serving_follow(task)
    return f"task {task.slug}: algorithm {task.algorithm_path} gate {sample.metric} {sample.score:.4f}"


def _serving_follow(task: Task) -> None:
    """A version activated before the algorithm's sample existed was served without it: decide again now."""
    if not ModelVersion.objects.filter(model__task=task, is_active=True).exists():
        return  # the first activation decides, with this sample
    try:
        serving_reevaluate(task=task)
    except Exception:  # noqa: BLE001 - the sample is recorded; the next activation decides again
        logger.exception("task %s: serving re-evaluation after the algorithm's evaluation failed", task.slug)


def task_algorithm_ensure(*, task: Task) -> str:
    """Before a task's first version is trained: make sure its algorithm's sample exists (or its evaluation failed).

    The first version's activation decides serving; without the algorithm's sample it would
    keep the algorithm "for lack of a held-out algorithmic score". A pending evaluation is
    claimed and run here (its queued delivery then does nothing); one that another worker is
    running is evaluated here too, for the sample only — evaluating twice is harmless, and that
    worker records the outcome. Returns what was done.
    """
    status = Task.objects.filter(pk=task.pk).values_list("algorithm_evaluation", flat=True).first()
    if status is None or status in FINISHED:
        return f"task {task.slug}: algorithm evaluation {status or 'gone'}"
    claimed = task_algorithm_claim(task_id=task.pk) if status == AlgorithmEvaluation.PENDING else None
    if claimed is not None:
        return _run_claimed(claimed)
    sample, warning = _evaluate(task)
    outcome = warning if sample is None else f"gate {sample.metric} {sample.score:.4f}"
    return f"task {task.slug}: algorithm evaluated beside the worker running its evaluation: {outcome}"


def task_algorithms_reconcile(*, lease_s: float | None = None) -> list[int]:
    """Evaluations unfinished for longer than ``lease_s`` go back to pending; returns their tasks' ids to queue.

    A running one that has had ``MAX_ATTEMPTS`` claims ends failed instead, with a warning.
    """
    cutoff = timezone.now() - timedelta(seconds=lease_s if lease_s is not None else evaluation_lease_s())
    stale = Q(algorithm_evaluation__in=(AlgorithmEvaluation.PENDING, AlgorithmEvaluation.RUNNING),
              algorithm_evaluation_at__lt=cutoff)
    requeued = []
    for task in Task.objects.filter(stale).only("pk", "slug", "algorithm_path", "algorithm_evaluation_attempts"):
        if task.algorithm_evaluation_attempts >= MAX_ATTEMPTS:
            _record(task, outcome=AlgorithmEvaluation.FAILED, only_if=stale,
                    warning=f"algorithm: {task.algorithm_path} could not be evaluated: its worker stopped "
                            f"{MAX_ATTEMPTS} times without finishing; serving has no algorithmic score to compare "
                            "neural versions with")
            continue
        if Task.objects.filter(stale, pk=task.pk).update(algorithm_evaluation=AlgorithmEvaluation.PENDING,
                                                        algorithm_evaluation_at=timezone.now()):
            requeued.append(task.pk)
    return requeued
