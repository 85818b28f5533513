"""SIGKILL the worker process that is training a run: the reconciler notices the missing heartbeat
within a bounded time and requeues the run (retried by another worker process) or, attempts
spent, ends it failed with the reason. Nothing is left half-done: the active version is the same
and loads, no weights file is orphaned, no version is duplicated."""

from __future__ import annotations

import os
import signal
import socket
import time

import numpy as np
import psutil
import pytest
import torch
from django.db.models import Count

from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_create, runs_reconcile
from models_registry.implementations import fresh_version_module
from models_registry.models import ModelVersion
from tests.distributed.services import wait_for, weight_files
from tests.workers import qcluster

pytestmark = [pytest.mark.distributed, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

HEARTBEAT_TIMEOUT_S = 10
TRAINING = {"time_budget_s": 12, "epochs": 100_000, "patience": 100_000}


def _kill_while_training(run: ImprovementRun, cluster, *, not_pid: int | None = None) -> tuple[int, float]:
    """SIGKILL the qcluster worker process whose run is in its training phase; (pid, when)."""
    def training():
        run.refresh_from_db()
        return run.status == RunStatus.RUNNING and run.progress >= 0.1 and not run.worker.endswith(f":{not_pid}")

    wait_for(training, timeout_s=120, what=f"run #{run.pk} training")
    host, pid = run.worker.rsplit(":", 1)
    assert host == socket.gethostname()
    children = {p.pid for p in psutil.Process(cluster.pid).children(recursive=True)}
    assert int(pid) in children, f"{run.worker} is not a process of this qcluster ({sorted(children)})"
    os.kill(int(pid), signal.SIGKILL)
    return int(pid), time.monotonic()


def _reconcile_until(run: ImprovementRun, status: str, *, killed_at: float) -> list[str]:
    """Run the reconciler (as the loop's tick does) until ``run`` is ``status``; it must not take long."""
    lines: list[str] = []

    def reconciled():
        lines.extend(runs_reconcile())
        run.refresh_from_db()
        return run.status == status

    # The bound is the heartbeat timeout plus a generous margin for a loaded machine (a deadline,
    # not a timing assertion: the reconciler's speed is measured nowhere else).
    wait_for(reconciled, timeout_s=HEARTBEAT_TIMEOUT_S + 60, interval_s=0.5, what=f"run #{run.pk} {status}")
    return lines


def _loads(version: ModelVersion) -> None:
    module = fresh_version_module(version).eval()  # checks the weights' sha256 on the way
    with torch.no_grad():
        out = module(torch.from_numpy(np.zeros((2, 4), dtype=np.float32)))
    assert torch.isfinite(out).all()


def test_a_killed_worker_run_is_retried_or_failed_with_a_reason(settings, weak_model, fast_loop, tmp_path):
    settings.PLASTICITY_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT_S
    settings.PLASTICITY_RUN_MAX_ATTEMPTS = 2
    model_a, model_b = weak_model("a"), weak_model("b")
    active_b = model_b.versions.get(is_active=True)

    with qcluster(workers=1, log_path=tmp_path / "qcluster.log",
                  PLASTICITY_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S)) as cluster:
        # Killed once: requeued, then retried to the end by the worker process that replaced it.
        run_a = run_create(model=model_a, strategy="training", params=TRAINING)
        pid_a, killed_at = _kill_while_training(run_a, cluster)
        lines = _reconcile_until(run_a, RunStatus.QUEUED, killed_at=killed_at)
        assert any(f"run #{run_a.pk} requeued" in line for line in lines), lines
        assert "sent no heartbeat" in run_a.progress_message
        wait_for(lambda: run_a.refresh_from_db() or run_a.status in (RunStatus.PROMOTED, RunStatus.REJECTED,
                                                                     RunStatus.FAILED),
                 timeout_s=120, interval_s=0.5, what="the retry finishing")

        # Killed on every attempt: ends failed, with the reason.
        run_b = run_create(model=model_b, strategy="training", params=TRAINING)
        pid_b1, killed_at = _kill_while_training(run_b, cluster)
        _reconcile_until(run_b, RunStatus.QUEUED, killed_at=killed_at)
        pid_b2, killed_at = _kill_while_training(run_b, cluster, not_pid=pid_b1)
        _reconcile_until(run_b, RunStatus.FAILED, killed_at=killed_at)

    log = (tmp_path / "qcluster.log").read_text(errors="replace")[-3000:]
    assert run_a.status in (RunStatus.PROMOTED, RunStatus.REJECTED), (run_a.status, run_a.error, log)
    assert run_a.attempts == 2 and not run_a.worker.endswith(f":{pid_a}")
    assert ModelVersion.objects.filter(model=model_a).count() == 1 + (run_a.status == RunStatus.PROMOTED)
    _loads(model_a.versions.get(is_active=True))

    assert run_b.attempts == 2 and len({pid_b1, pid_b2}) == 2
    assert "sent no heartbeat" in run_b.error and run_b.finished_at is not None
    assert run_b.result_version is None
    assert model_b.versions.get(is_active=True) == active_b, "the active version is unchanged"
    assert model_b.versions.count() == 1
    _loads(active_b)

    duplicates = ModelVersion.objects.values("model", "number").annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicates.exists()
    referenced = set(ModelVersion.objects.values_list("weights_file", flat=True)) | set(
        ModelVersion.objects.exclude(artifact_file="").values_list("artifact_file", flat=True))
    orphans = weight_files(settings.MEDIA_ROOT) - referenced
    assert not orphans, f"orphan weight files: {sorted(orphans)}"
