"""``manage.py serve``'s supervision, one step at a time and without waiting on a real clock.

``Supervised`` restarts a child that exited after a back-off of 1 s, doubling to at most 30 s,
and back to 1 s once a child has stayed up ``STABLE_S``; every exit is logged with its code or
signal. The clock here is simulated and the child a stand-in, so nothing sleeps. The serve
command's reconciler requeues a run whose worker stopped beating after one call; the bound on how
long a killed worker's run waits follows from the real constants (see the last test). The same
behaviour with real processes is in ``test_serve_supervision.py`` (slow).
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.utils import timezone

from improvement.choices import RunStatus
from improvement.management.commands import serve
from improvement.management.commands.serve import RECONCILE_EVERY_S, Command, Supervised
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import HEARTBEAT_INTERVAL_S, run_create
from models_registry.services import model_create
from tests.factories import csv_task, version_with_score

# --------------------------------------------------------------------------- a simulated child


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def monotonic(self) -> float:
        return self.now


class FakeProcess:
    """A child that runs until the test ends it (``returncode``); it never exists as a process."""

    pids = iter(range(900_001, 10**7))

    def __init__(self, argv, **kwargs) -> None:
        self.argv, self.kwargs, self.pid = argv, kwargs, next(self.pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout=None) -> int | None:
        return self.returncode


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(serve, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture
def group_signals(monkeypatch) -> list[tuple[int, int]]:
    """(pid, signal) of every process-group signal ``serve`` sends; none reaches a real process."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(serve, "_signal_group", lambda child, sig: sent.append((child.pid, sig)))
    return sent


@pytest.fixture
def fake_children(monkeypatch, group_signals) -> list[FakeProcess]:
    started: list[FakeProcess] = []

    def popen(argv, **kwargs):
        started.append(FakeProcess(argv, **kwargs))
        return started[-1]

    monkeypatch.setattr(serve, "subprocess", SimpleNamespace(Popen=popen, TimeoutExpired=subprocess.TimeoutExpired))
    return started


def _supervised(lines: list[str]) -> Supervised:
    return Supervised("qcluster", ["qcluster-stand-in"], {}, log=lines.append)


RESTARTING = re.compile(r"restarting in (\S+) s")


def _crash_and_restart(child: Supervised, clock: FakeClock, lines: list[str], *, code: int = 3) -> float:
    """End the child with ``code``; return the back-off logged, checking nothing restarts before it."""
    dead = child.process
    dead.returncode = code
    child.check()
    delays = RESTARTING.findall(lines[-1])
    assert len(delays) == 1 and f"(pid {dead.pid}) stopped unexpectedly" in lines[-1], lines[-1]
    delay = float(delays[0])
    restarts = child.restarts
    clock.now += delay - 0.25  # the supervisor looks every half second: not yet
    child.check()
    assert child.process is dead and child.restarts == restarts
    clock.now += 0.25
    child.check()
    assert child.process is not dead and child.process.poll() is None and child.restarts == restarts + 1
    assert lines[-1] == f"serve: qcluster restarted (restart {restarts + 1}, pid {child.process.pid})\n"
    return delay


# --------------------------------------------------------------------------- back-off


def test_the_back_off_doubles_from_one_second_to_a_cap_of_thirty(clock, fake_children, group_signals):
    assert (Supervised.BACKOFF_MIN_S, Supervised.BACKOFF_MAX_S) == (1.0, 30.0)
    lines: list[str] = []
    child = _supervised(lines)
    delays = [_crash_and_restart(child, clock, lines) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert len(fake_children) == 9 and child.restarts == 8
    # Each dead child's process group was killed (what it forked must not outlive it), and only those.
    assert group_signals == [(p.pid, signal.SIGKILL) for p in fake_children[:-1]]


def test_a_child_that_stayed_up_the_stable_period_restarts_after_the_minimum_again(clock, fake_children):
    lines: list[str] = []
    child = _supervised(lines)
    assert [_crash_and_restart(child, clock, lines) for _ in range(4)] == [1, 2, 4, 8]
    clock.now += Supervised.STABLE_S - 0.5  # not quite stable: the back-off keeps growing
    assert _crash_and_restart(child, clock, lines) == 16
    clock.now += Supervised.STABLE_S  # up for the whole stable period: back to the start
    assert [_crash_and_restart(child, clock, lines) for _ in range(3)] == [1, 2, 4]


def test_every_exit_is_logged_with_its_code_or_signal(clock, fake_children):
    lines: list[str] = []
    child = _supervised(lines)
    _crash_and_restart(child, clock, lines, code=3)
    assert "stopped unexpectedly (exit code 3); restarting in 1 s" in lines[-2]
    _crash_and_restart(child, clock, lines, code=-signal.SIGKILL)
    assert "stopped unexpectedly (killed by signal 9); restarting in 2 s" in lines[-2]
    _crash_and_restart(child, clock, lines, code=0)
    assert "stopped unexpectedly (exit code 0); restarting in 4 s" in lines[-2]


def test_a_child_being_stopped_is_not_restarted(clock, fake_children):
    lines: list[str] = []
    child = _supervised(lines)
    child.stopping = True
    child.process.returncode = -signal.SIGTERM
    clock.now += 3600
    child.check()
    assert len(fake_children) == 1 and lines == []


def test_the_exit_of_a_real_child_is_noticed_and_logged(clock, group_signals):
    """With a real (harmless) process: the exit code comes from the operating system."""
    lines: list[str] = []
    child = Supervised("stand-in", [sys.executable, "-c", "import sys; sys.exit(3)"], {}, log=lines.append)
    child.process.wait(timeout=60)
    child.check()
    assert lines == [f"serve: stand-in (pid {child.process.pid}) stopped unexpectedly (exit code 3); "
                     f"restarting in 1 s\n"]
    assert group_signals == [(child.process.pid, signal.SIGKILL)]


# --------------------------------------------------------------------------- reconciling a dead worker's run


def _running(model, *, worker: str, heartbeat_age_s: float) -> ImprovementRun:
    run = run_create(model=model, strategy="training", enqueue=False)
    ImprovementRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, worker=worker, attempts=1, started_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age_s))
    return run


@pytest.mark.django_db
def test_one_reconcile_of_serve_requeues_a_run_with_a_stale_heartbeat_and_not_a_live_one(
        django_capture_on_commit_callbacks):
    timeout_s = settings.PLASTICITY_HEARTBEAT_TIMEOUT
    assert settings.PLASTICITY_RUN_MAX_ATTEMPTS >= 2  # a first attempt that died is retried
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.5)
    dead = _running(model, worker="gone:1", heartbeat_age_s=timeout_s + 1)
    # A live worker beats every HEARTBEAT_INTERVAL_S: its heartbeat is never older than that.
    alive = _running(model, worker="here:2", heartbeat_age_s=HEARTBEAT_INTERVAL_S)

    err = io.StringIO()
    command = Command(stdout=io.StringIO(), stderr=err)
    with django_capture_on_commit_callbacks() as enqueued:
        command._reconcile()

    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.worker) == (RunStatus.QUEUED, "")
    assert dead.progress_message == f"requeued: worker gone:1 sent no heartbeat for {timeout_s:g} s"
    assert (alive.status, alive.worker) == (RunStatus.RUNNING, "here:2")
    assert len(enqueued) == 1  # the requeued run goes back to the broker once the change commits
    log = err.getvalue()
    assert log == f"serve: run #{dead.pk} requeued (worker gone:1 sent no heartbeat for {timeout_s:g} s)\n"

    # A second round finds nothing more to do.
    command._reconcile()
    assert err.getvalue() == log


def test_a_killed_workers_run_is_requeued_within_thirty_seconds_by_construction():
    """From the kill, the heartbeat is stale after at most the timeout (the last beat came before the
    kill); serve reconciles every RECONCILE_EVERY_S, checked on its half-second supervision loop."""
    supervision_poll_s = 0.5  # serve's loop: time.sleep(0.5) between looks
    assert HEARTBEAT_INTERVAL_S < settings.PLASTICITY_HEARTBEAT_TIMEOUT  # a live worker is never stale
    assert settings.PLASTICITY_HEARTBEAT_TIMEOUT + RECONCILE_EVERY_S + supervision_poll_s <= 30
