"""``manage.py serve`` supervises its children: a killed web server or worker is started again."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import psutil
import pytest

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig
from improvement.runs.lifecycle import run_create
from models_registry.services import model_create
from tests.distributed.services import wait_for
from tests.factories import csv_task, trained_version
from tests.workers import web_tier

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _child(serve: psutil.Process, word: str) -> psutil.Process | None:
    """``serve``'s direct child whose command line has ``word`` (the gunicorn master, the qcluster)."""
    for child in serve.children():
        try:
            if word in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:  # noqa: S310 - local server
            return response.status == 200
    except OSError:
        return False


def test_a_killed_web_server_and_a_killed_worker_are_restarted(tmp_path):
    log = tmp_path / "serve.log"
    with web_tier(log_path=log, web_workers=1, workers=1, start_timeout_s=120) as (url, _, process):
        serve = psutil.Process(process.pid)
        wait_for(lambda: _child(serve, "qcluster") is not None, timeout_s=60, what="the worker started")
        for word in ("gunicorn", "qcluster"):
            old = _child(serve, word)
            assert old is not None, word
            forked = old.children(recursive=True)
            os.kill(old.pid, signal.SIGKILL)

            def replaced(word=word, old=old) -> bool:
                new = _child(serve, word)
                return new is not None and new.pid != old.pid

            wait_for(replaced, timeout_s=90, what=f"{word} restarted")
            # What the killed process had forked is gone too (no orphan keeps the port or a run).
            wait_for(lambda forked=forked: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                                   for p in forked),
                     timeout_s=30, what=f"the killed {word}'s children stopped")
            wait_for(lambda: _healthy(url), timeout_s=90, what="the web tier answering again")
            assert f"{word}" in log.read_text(errors="replace")
        text = log.read_text(errors="replace")
        assert text.count("stopped unexpectedly (killed by signal 9)") == 2, text[-3000:]
        assert text.count("restarted (restart 1") == 2


WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}
FINAL = (RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED)


def test_a_run_whose_worker_is_killed_under_serve_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"auto_start": False, "run_time_budget_s": 30})
    model = model_create(task=csv_task(n=300, seed=3), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    log = tmp_path / "serve.log"
    with web_tier(log_path=log, web_workers=1, workers=1, start_timeout_s=120) as (_url, _, process):
        serve = psutil.Process(process.pid)
        run = run_create(model=model, strategy="training",
                         params={"time_budget_s": 30, "epochs": 100_000, "patience": 100_000})

        def second_phase_checkpointed() -> bool:
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and any(key.startswith("training-1-") for key in run.checkpoint)

        wait_for(second_phase_checkpointed, timeout_s=180, what=f"run #{run.pk} in its second phase")
        saved = run.checkpoint
        cluster = _child(serve, "qcluster")
        assert cluster is not None
        os.kill(cluster.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # serve's own reconciler requeues it from the stale heartbeat; the restarted worker resumes it.
        wait_for(lambda: run.refresh_from_db() or run.attempts == 2, timeout_s=180, interval_s=0.5,
                 what=f"run #{run.pk} claimed again")
        requeued_after_s = time.monotonic() - killed_at
        wait_for(lambda: run.refresh_from_db() or run.status in FINAL, timeout_s=240, interval_s=0.5,
                 what=f"run #{run.pk} finished")
        # Its checkpoint files are removed once it has ended (just after its final status is written).
        wait_for(lambda: run.refresh_from_db() or run.checkpoint == {}, timeout_s=60, interval_s=0.5,
                 what=f"run #{run.pk}'s checkpoints removed")
    text = log.read_text(errors="replace")
    # Requeued by serve's reconciler or, failing that, by the scheduler's minute tick: either way once.
    assert text.count(f"serve: run #{run.pk} requeued (worker") <= 1, text[-3000:]
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED), (run.status, run.error)
    (first,) = [key.split("-", 2)[2] for key in saved if key.startswith("training-0-")]
    (second,) = [key.split("-", 2)[2] for key in saved if key.startswith("training-1-")]
    assert f"{first}: finished by an earlier attempt" in run.log, run.log
    assert f"{second}: resuming from its checkpoint" in run.log, run.log
    assert run.checkpoint == {}
    print(f"run #{run.pk} claimed again {requeued_after_s:.1f} s after its worker was killed")
