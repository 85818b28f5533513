"""Input drift services: check each task's recent live inputs against its training split, record alarms.

The serving tracker flushes a uniform sample of each task's predict inputs as ``InputSample`` rows;
``input_drift_check`` (called by the scheduler's tick with the thresholds of the improvement
configuration) reads the newest ``window_rows`` rows of each task, drops older samples, and runs
``serving.drift.drift_detect_recent`` (the whole window, and its newest ``min_rows`` rows) against the
task's training split. A drift is announced by
``input_drift_record`` — one ``InputDrift`` row with the evidence, adrenaline, a
``serving.input_drift`` event — at most once per ``cooldown_s`` per task. The genetic drift
trigger of the task's models reads the alarm (``input_drift_latest``). Every check that compared
rows, alarm or not, also leaves a ``DriftReading`` (``drift_reading_record``), the newest
``PLASTICITY_DRIFT_READINGS_KEEP`` per task: the task page charts them.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction
from django.utils import timezone

from events.payloads import ServingInputDriftPayload
from events.publisher import publish
from hormones.choices import HormoneName
from hormones.services import hormone_release
from models_registry.implementations import task_dataset
from models_registry.models import Task
from models_registry.serving.conf import serving_setting
from models_registry.serving.drift import DriftReference, DriftReport, drift_detect_recent, drift_reference
from models_registry.serving.models import DriftReading, InputDrift, InputSample

logger = logging.getLogger(__name__)

REFERENCE_CACHE = 16


@dataclass(frozen=True)
class DriftCheck:
    """What one check of one task found (``drift`` is the alarm recorded, if any)."""

    task_id: int
    report: DriftReport | None
    drift: InputDrift | None
    skipped: str = ""


# ------------------------------------------------------------------------------ reads


_references: dict[tuple[int, str], DriftReference] = {}
_references_lock = threading.Lock()


def drift_reference_for(task: Task) -> DriftReference:
    """The task's training split summarised for drift checks (cached per dataset file)."""
    key = (task.pk, task.dataset_sha256)
    with _references_lock:
        cached = _references.get(key)
    if cached is not None:
        return cached
    X_train, _y_train = task_dataset(task).train
    reference = drift_reference(np.asarray(X_train, dtype=np.float32), feature_names=list(task.feature_names or []))
    with _references_lock:
        if len(_references) >= REFERENCE_CACHE:
            _references.pop(next(iter(_references)))
        _references[key] = reference
    return reference


def input_rows_recent(task: Task, *, window_rows: int) -> np.ndarray:
    """The newest ``window_rows`` sampled live rows of the task (fewer when fewer were sampled), (N, width)."""
    chunks: list[np.ndarray] = []
    total = 0
    for data in InputSample.objects.filter(task=task).order_by("-id").values_list("data", flat=True).iterator():
        rows = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        chunks.append(rows)
        total += rows.shape[0]
        if total >= window_rows:
            break
    if not chunks:
        return np.empty((0, 0), dtype=np.float32)
    widths = {c.shape[1] for c in chunks}
    if len(widths) > 1:  # the task's input shape changed: only the newest shape counts
        chunks = [c for c in chunks if c.shape[1] == chunks[0].shape[1]]
    return np.concatenate(chunks)[:window_rows]


def input_drift_latest(*, task_id: int, since: datetime | None = None) -> InputDrift | None:
    qs = InputDrift.objects.filter(task_id=task_id)
    if since is not None:
        qs = qs.filter(created_at__gt=since)
    return qs.order_by("-created_at", "-id").first()


# ------------------------------------------------------------------------------ writes


def input_samples_trim(task: Task, *, window_rows: int) -> int:
    """Delete the task's samples older than the newest ones that hold ``window_rows`` rows."""
    total = 0
    for sample_id, rows in InputSample.objects.filter(task=task).order_by("-id").values_list("id", "rows"):
        total += rows
        if total >= window_rows:
            deleted, _ = InputSample.objects.filter(task=task, id__lt=sample_id).delete()
            return deleted
    return 0


def input_drift_record(*, task: Task, report: DriftReport) -> InputDrift:
    """Announce that the task's live inputs drifted: an ``InputDrift`` row, adrenaline, an event."""
    evidence = report.evidence()
    moved = [f["feature"] for f in evidence["features"]]
    detail = (f"live inputs drifted: PSI {report.psi_max:.3f} ≥ {report.threshold:g} on {', '.join(moved)} "
              f"over {report.rows} rows")
    with transaction.atomic():
        drift = InputDrift.objects.create(task=task, psi_max=report.psi_max, rows=report.rows, evidence=evidence)
        hormone_release(name=HormoneName.ADRENALINE, delta=serving_setting("PLASTICITY_DRIFT_ADRENALINE"),
                        cause=f"{task.slug}: {detail}", context={"task": task.slug, "input_drift_id": drift.pk,
                                                                   "psi_max": evidence["psi_max"], "rows": report.rows})
        publish("serving.input_drift", ServingInputDriftPayload(
            task=task.slug, task_id=task.pk, drift_id=drift.pk, psi_max=evidence["psi_max"],
            threshold=report.threshold, rows=report.rows, features=moved,
        ))
    logger.warning("serving %s: %s", task.slug, detail)
    return drift


def drift_reading_record(*, task: Task, report: DriftReport, drift: InputDrift | None) -> DriftReading:
    """Keep what one check measured (its largest PSIs, the threshold, the verdict); trim the task's oldest."""
    moved = {s.feature for s in report.shifts}
    features = [{"feature": s.feature, "psi": round(s.psi, 4), "p_value": float(f"{s.p_value:.3g}"),
                 "moved": s.feature in moved} for s in report.top]
    reading = DriftReading.objects.create(task=task, psi_max=report.psi_max, threshold=report.threshold,
                                          rows=report.rows, drifted=report.drifted, features=features, alarm=drift)
    keep = max(1, serving_setting("PLASTICITY_DRIFT_READINGS_KEEP"))
    oldest_kept = list(DriftReading.objects.filter(task=task).order_by("-id").values_list("id", flat=True)
                       [keep - 1:keep])
    if oldest_kept:
        DriftReading.objects.filter(task=task, id__lt=oldest_kept[0]).delete()
    return reading


def input_drift_check_task(task: Task, *, threshold: float, min_rows: int, window_rows: int,
                           cooldown_s: float) -> DriftCheck:
    now = timezone.now()
    last = input_drift_latest(task_id=task.pk)
    if last is not None and last.created_at > now - timedelta(seconds=cooldown_s):
        return DriftCheck(task.pk, None, None, skipped="cooling down")
    input_samples_trim(task, window_rows=window_rows)
    live = input_rows_recent(task, window_rows=window_rows)
    if live.shape[0] < min_rows:
        return DriftCheck(task.pk, None, None, skipped=f"{live.shape[0]} rows < {min_rows}")
    reference = drift_reference_for(task)
    expected_width = int(np.prod(task.input_shape))
    if live.shape[1] != expected_width:
        return DriftCheck(task.pk, None, None, skipped=f"sampled width {live.shape[1]} ≠ {expected_width}")
    report = drift_detect_recent(reference, live.reshape(live.shape[0], *task.input_shape), threshold=threshold,
                                 min_rows=min_rows)
    drift = input_drift_record(task=task, report=report) if report.drifted else None
    drift_reading_record(task=task, report=report, drift=drift)
    return DriftCheck(task.pk, report, drift)


def input_drift_check(*, threshold: float, min_rows: int, window_rows: int, cooldown_s: float) -> list[DriftCheck]:
    """Check every task with sampled live inputs; a task whose check fails is logged and skipped."""
    checks = []
    task_ids = InputSample.objects.order_by().values_list("task_id", flat=True).distinct()
    for task in Task.objects.filter(pk__in=list(task_ids)).order_by("pk"):
        try:
            checks.append(input_drift_check_task(task, threshold=threshold, min_rows=min_rows,
                                                 window_rows=window_rows, cooldown_s=cooldown_s))
        except Exception:  # noqa: BLE001 - one task's unreadable dataset must not stop the others' checks
            logger.exception("input drift check of %s failed", task.slug)
    return checks
