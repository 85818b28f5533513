"""The lifecycle of an ImprovementRun: every state transition is here, and only here.

See ``ImprovementRun``'s docstring for the allowed transitions. Each is one conditional
UPDATE that publishes its live event in the same transaction (the outbox row commits with
the change it announces). Conditional updates make the transitions safe across processes: a
duplicate delivery of a run finds it no longer queued and does nothing; a worker whose run
was cancelled or reconciled meanwhile finds it no longer running and stops.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from events.payloads import RunPayload
from events.publisher import publish
from improvement.choices import IN_FLIGHT, RunOrigin, RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, LoopState
from improvement.predictor import run_features
from improvement.runs.checkpoints import checkpoints_delete
from improvement.runs.search_files import search_files_delete
from improvement.strategies.registry import get_strategy
from models_registry.models import ModelVersion, NeuralModel

logger = logging.getLogger(__name__)

#: How often a running run (or a search trial in training) proves its worker is alive; the
#: reconciler's timeout (``PLASTICITY_HEARTBEAT_TIMEOUT``) is several beats.
HEARTBEAT_INTERVAL_S = 4.0
CURVE_LIMIT = 2000
LOG_LIMIT = 20_000
# A run keeps training through a database outage this long (its reports wait); longer, it stops.
DB_OUTAGE_GRACE_S = 60.0


class RunCancelled(Exception):
    """Raised inside a worker when its run was cancelled or taken away from it."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_payload(run: ImprovementRun, *, message: str = "") -> RunPayload:
    """The live event payload of a run (run.created / run.progress / run.finished)."""
    return RunPayload(run_id=run.pk, model_id=run.model_id, model=str(run.model), task=run.model.task.slug,
                      strategy=run.strategy, status=run.status, progress=run.progress,
                      message=message or run.progress_message)


def run_create(
    *, model: NeuralModel, strategy: str, origin: str = RunOrigin.LOOP, trigger_reason: str = "",
    priority: float = 0.0, params: dict | None = None, requested_by=None, enqueue: bool = True,
    features: dict | None = None,
) -> ImprovementRun:
    """Queue a run. ``features`` (the predictor's inputs) are taken now when the caller has none."""
    get_strategy(strategy)  # unknown names fail here with the list of valid ones
    if features is None:
        features = _features_now(model, strategy)
    with transaction.atomic():
        run = ImprovementRun.objects.create(
            model=model, strategy=strategy, origin=origin, trigger_reason=trigger_reason[:300],
            priority=priority, params=params or {}, requested_by=requested_by, features=features,
        )
        payload = run_payload(run, message="queued")
        payload["reason"] = run.trigger_reason
        publish("run.created", payload)
        if enqueue:
            transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    return run


def _features_now(model: NeuralModel, strategy: str) -> dict:
    """The model, strategy, task and hormone state now, for the learned predictor; never blocks a run."""
    try:
        return run_features(model=model, strategy=strategy)
    except Exception:  # noqa: BLE001 - a run without features is only left out of the predictor's history
        logger.exception("features of a new %s run on %s could not be taken", strategy, model)
        return {}


def run_enqueue(*, run_id: int) -> None:
    async_task("improvement.tasks.run_improvement", run_id, task_name=f"run-{run_id}", group="improvement")


def run_claim(*, run_id: int, worker: str) -> str:
    """queued → running, only if still queued and a slot is free.

    Returns "claimed", "not_queued" (a duplicate delivery, a cancelled run) or "at_capacity"
    (``max_concurrent_improvements`` runs are already running, on any worker). The check and
    the update happen under the loop-state row lock, so the limit holds across processes.
    """
    limit = ImprovementConfig.load().max_concurrent_improvements
    now = timezone.now()
    with transaction.atomic():
        LoopState.objects.select_for_update().get_or_create(pk=1)
        if not ImprovementRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).exists():
            return "not_queued"
        if ImprovementRun.objects.filter(status=RunStatus.RUNNING).count() >= limit:
            return "at_capacity"
        ImprovementRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, worker=worker[:120], started_at=now, heartbeat_at=now,
            attempts=F("attempts") + 1, progress=0.0, progress_message="starting",
        )
        run = ImprovementRun.objects.select_related("model__task").get(pk=run_id)
        publish("run.progress", run_payload(run, message="starting"))
    return "claimed"


def run_pick(*, preferred: int) -> int:
    """The queued run a worker should execute for a delivery of ``preferred``.

    The broker delivers in FIFO order, but slots should go by priority: each delivery is a
    token for "one queued run", and the worker takes the highest-priority queued run (oldest
    first among equals). The preferred run keeps its own token-less turn: whichever delivery
    comes next takes it. Every queued run is still executed exactly once (claims are conditional).
    """
    top = (ImprovementRun.objects.filter(status=RunStatus.QUEUED, cancel_requested=False)
           .order_by("-priority", "created_at", "id").values_list("id", "priority").first())
    if top is None:
        return preferred
    own = ImprovementRun.objects.filter(pk=preferred, status=RunStatus.QUEUED).values_list("priority", flat=True).first()
    if own is not None and own >= top[1]:
        return preferred
    return top[0]


def run_finish(
    *, run_id: int, status: str, decision: str = "", error: str = "", gain: float | None = None,
    candidate_metrics: dict | None = None, message: str = "",
) -> bool:
    """running → rejected | failed | cancelled (promotion finishes through ``run_mark_promoted``)."""
    if status not in (RunStatus.REJECTED, RunStatus.FAILED, RunStatus.CANCELLED):
        raise ValueError(f"run_finish cannot set {status!r}")
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "decision": decision[:300], "error": error,
              "progress_message": (message or status)[:200]}
    if gain is not None:
        fields["gain"] = gain
    if candidate_metrics is not None:
        fields["candidate_metrics"] = candidate_metrics
    with transaction.atomic():
        done = ImprovementRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(**fields)
        if done:
            run_announce_finished(run_id=run_id)
    return bool(done)


def run_finish_cancelled(*, run_id: int) -> str:
    """running → cancelled, for a run whose worker stopped at an operator's cancel request. Returns the status."""
    with transaction.atomic():
        if ImprovementRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, cancel_requested=True).update(
            status=RunStatus.CANCELLED, finished_at=timezone.now(), decision="cancelled by an operator",
            progress_message="cancelled",
        ):
            run_announce_finished(run_id=run_id)
    return ImprovementRun.objects.values_list("status", flat=True).get(pk=run_id)


def run_mark_promoted(*, run_id: int, version: ModelVersion, gain: float, decision: str,
                      candidate_metrics: dict) -> bool:
    """running → promoted. Called by ``version_promote`` inside the transaction that creates the version."""
    updated = ImprovementRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
        status=RunStatus.PROMOTED, result_version=version, gain=gain, decision=decision[:300],
        candidate_metrics=candidate_metrics, finished_at=timezone.now(), progress=1.0, progress_message="promoted",
    )
    if updated:
        run_announce_finished(run_id=run_id)
    return bool(updated)


def run_announce_finished(*, run_id: int) -> None:
    run = ImprovementRun.objects.select_related("model__task").get(pk=run_id)
    payload = run_payload(run, message=run.decision or run.error[:200])
    payload["gain"] = run.gain
    publish("run.finished", payload)


def run_cancel(*, run: ImprovementRun) -> ImprovementRun:
    """queued → cancelled at once; running → cancel requested (the worker stops at its next report)."""
    with transaction.atomic():
        if ImprovementRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED, finished_at=timezone.now(), decision="cancelled before it started",
            progress_message="cancelled",
        ):
            run_announce_finished(run_id=run.pk)
            # A requeued run cancelled before its next attempt still holds its earlier attempt's files.
            transaction.on_commit(functools.partial(run_files_delete, run.pk))
        else:
            ImprovementRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    return run


class RunReporter:
    """Progress, heartbeat and live curve of one running run, written at most every 0.5 s."""

    def __init__(self, run: ImprovementRun, *, interval_s: float = 0.5, on_flush=None) -> None:
        self.run = run
        self.on_flush = on_flush
        self.interval_s = interval_s
        self._last_write = 0.0
        self._points: list[dict] = []
        self._log: list[str] = []
        self._db_down_since: float | None = None
        self.peak_rss_mb = 0.0
        self._sample_memory()

    def _sample_memory(self) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, psutil.Process().memory_info().rss / 2**20)

    def log(self, line: str) -> None:
        self._log.append(f"[{timezone.now():%H:%M:%S}] {line}")

    def __call__(self, fraction: float, message: str, point: dict | None = None) -> None:
        if point is not None:
            self._points.append({**point, "t": round(time.time(), 3)})
        self._sample_memory()
        now = time.monotonic()
        if now - self._last_write < self.interval_s and fraction < 1.0:
            return
        self.flush(fraction, message)

    def flush(self, fraction: float | None = None, message: str = "") -> None:
        self._last_write = time.monotonic()
        run = self.run
        if fraction is not None:
            run.progress = max(run.progress, min(1.0, float(fraction)))
        if message:
            run.progress_message = message[:200]
        run.curve = (run.curve + self._points)[-CURVE_LIMIT:]
        if self._log:
            run.log = (run.log + "\n".join(self._log) + "\n")[-LOG_LIMIT:]
        points, self._points, self._log = self._points, [], []
        try:
            with transaction.atomic():
                updated = ImprovementRun.objects.filter(
                    pk=run.pk, status=RunStatus.RUNNING, worker=run.worker, cancel_requested=False
                ).update(progress=run.progress, progress_message=run.progress_message, curve=run.curve,
                         log=run.log, heartbeat_at=timezone.now())
                if updated:
                    payload = run_payload(run)
                    payload["points"] = points[-20:]
                    publish("run.progress", payload)
        except (OperationalError, InterfaceError) as exc:
            # A database restart must not end a training run: this report waits for the next one
            # (curve and log are kept in memory); only an outage longer than the grace stops the run.
            if self._db_down_since is None:
                self._db_down_since = time.monotonic()
                logger.warning("run #%s: progress not saved, database unavailable (%s)", run.pk, exc)
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()  # the next report reconnects
            if time.monotonic() - self._db_down_since > DB_OUTAGE_GRACE_S:
                raise
            return
        self._db_down_since = None
        if not updated:
            raise RunCancelled(f"run #{run.pk} was cancelled or is no longer held by this worker")
        if self.on_flush is not None:
            self.on_flush(run.progress, run.progress_message)


class Heartbeat:
    """A background thread that stamps ``heartbeat_at`` every ``interval_s`` while a run executes.

    Progress reports also stamp it, but some phases (ONNX export, evaluating a candidate) report
    nothing for a while; this keeps a live worker from looking dead to the reconciler. It only
    touches the row while this worker still holds it in the running state. ``model`` is the
    row's class: an ``ImprovementRun`` (the default) or a ``SearchCandidate`` being trained.
    """

    def __init__(self, run_id: int, worker: str, *, interval_s: float = HEARTBEAT_INTERVAL_S,
                 model: Any = None) -> None:
        self.run_id, self.worker, self.interval_s = run_id, worker, interval_s
        self.model = model or ImprovementRun
        self.label = f"{self.model.__name__} #{run_id}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.label}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.model.objects.filter(pk=self.run_id, status=RunStatus.RUNNING,
                                              worker=self.worker[:120]).update(heartbeat_at=timezone.now())
                except (OperationalError, InterfaceError) as exc:
                    # The database is restarting: miss this beat, beat again on a fresh connection.
                    logger.warning("heartbeat of %s missed: %s", self.label, exc)
                    connection.close_if_unusable_or_obsolete()
        except Exception:  # noqa: BLE001 - a missed beat is what the reconciler is for
            logger.warning("heartbeat of %s stopped", self.label, exc_info=True)
        finally:
            connection.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def runs_in_flight() -> int:
    return ImprovementRun.objects.filter(status__in=IN_FLIGHT).count()


def runs_reconcile(*, timeout_s: float | None = None, max_attempts: int | None = None) -> list[str]:
    """End or requeue runs whose worker vanished (no heartbeat within ``timeout_s``).

    A run that has attempts left goes back to queued and is enqueued again; otherwise it
    ends failed with the reason. Returns one line per run acted upon.
    """
    timeout_s = timeout_s or settings.PLASTICITY_HEARTBEAT_TIMEOUT
    max_attempts = max_attempts or settings.PLASTICITY_RUN_MAX_ATTEMPTS
    cutoff = timezone.now() - timedelta(seconds=timeout_s)
    lines = []
    for run in ImprovementRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff):
        reason = f"worker {run.worker or '?'} sent no heartbeat for {timeout_s:g} s"
        if run.attempts < max_attempts and not run.cancel_requested:
            with transaction.atomic():
                moved = ImprovementRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING,
                                                      heartbeat_at__lt=cutoff).update(
                    status=RunStatus.QUEUED, worker="", progress=0.0,
                    progress_message=f"requeued: {reason}",
                )
                if moved:
                    transaction.on_commit(functools.partial(run_enqueue, run_id=run.pk))
                    lines.append(f"run #{run.pk} requeued ({reason})")
        else:
            with transaction.atomic():
                moved = ImprovementRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING,
                                                      heartbeat_at__lt=cutoff).update(
                    status=RunStatus.FAILED, finished_at=timezone.now(), error=f"failed: {reason}",
                    progress_message="worker vanished",
                )
                if moved:
                    run_announce_finished(run_id=run.pk)
                    # Its worker died before cleaning up: drop the search candidates' weight files.
                    transaction.on_commit(functools.partial(run_files_delete, run.pk))
                    lines.append(f"run #{run.pk} failed ({reason})")
    return lines


def run_files_delete(run_id: int) -> None:
    """Remove an ended run's search-candidate weights and checkpoints; a failure is logged, never raised."""
    try:
        search_files_delete(run_id=run_id)
        checkpoints_delete(run_id=run_id)
    except Exception:  # noqa: BLE001 - a leftover file must not undo the run's end
        logger.exception("removing search files or checkpoints of run #%s failed", run_id)
