"""The soak's view of ``manage.py serve``'s process tree: who is who, their memory, and the worker kill.

``serve`` starts each child in its own process group: the gunicorn master (whose forked children
are the HTTP workers), daphne (``/ws/``) and ``manage.py qcluster``. django-q2's qcluster forks a
sentinel, and the sentinel forks the worker processes that run tasks first, then a monitor and a
pusher (``django_q.cluster.Sentinel.spawn_cluster``). Without ``setproctitle`` (not installed
here) they all share the qcluster's command line, so the n-th child a sentinel ever had is
labelled by that order: the first ``Q_WORKERS`` are task workers, then the monitor, then the pusher;
a later one is a reincarnated task worker (the sentinel replaces a worker that died).

``ProcessSampler`` samples every process's RSS on a thread; ``rss_growth`` turns one process's
samples into the growth the soak reports.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

#: django-q2 worker processes ``serve --workers`` starts (the soak uses one).
Q_WORKERS = 1
#: Fewest samples after the warm-up for a growth to be computed.
MIN_SAMPLES = 10
#: Points of each process's RSS series kept in the result.
SERIES_POINTS = 60


@dataclass
class Tracked:
    """One process seen during the soak (a pid reused later is a different process: the key has its start time)."""

    pid: int
    role: str
    label: str
    created: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), RSS in MB)
    cpu_s: float = 0.0  # user + system CPU seconds at the last sample


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _children(process: psutil.Process, *, recursive: bool = False) -> list[psutil.Process]:
    try:
        return process.children(recursive=recursive)
    except psutil.Error:
        return []


def _created(process: psutil.Process) -> float:
    try:
        return process.create_time()
    except psutil.Error:
        return math.inf


class ServeTree:
    """Roles of ``serve``'s descendants; labels are fixed the first time a process is seen."""

    def __init__(self, serve: psutil.Process) -> None:
        self.serve = serve
        self.tracked: dict[tuple[int, float], Tracked] = {}
        self._sentinel_children: dict[tuple[int, float], list[tuple[int, float]]] = {}
        self._per_role: dict[str, int] = {}
        self._lock = threading.Lock()

    def _child(self, word: str) -> psutil.Process | None:
        for child in _children(self.serve):
            if word in _cmdline(child):
                return child
        return None

    def qcluster_main(self) -> psutil.Process | None:
        """serve's qcluster child (the process serve supervises and restarts)."""
        return self._child("qcluster")

    @staticmethod
    def qcluster_ready(main: psutil.Process) -> bool:
        """The cluster is up: its sentinel has forked the task workers, the monitor and the pusher."""
        return any(len(_children(sentinel)) >= Q_WORKERS + 2 for sentinel in _children(main))

    def qcluster_members(self, main: psutil.Process) -> list[tuple[psutil.Process, str]]:
        members = [(main, "qcluster main")]
        for sentinel in _children(main):
            members.append((sentinel, "qcluster sentinel"))
            order = self._sentinel_children.setdefault((sentinel.pid, _created(sentinel)), [])
            for child in sorted(_children(sentinel), key=_created):
                key = (child.pid, _created(child))
                if key not in order:
                    order.append(key)
                n = order.index(key)
                role = ("qcluster task worker" if n < Q_WORKERS or n > Q_WORKERS + 1 else
                        "qcluster monitor" if n == Q_WORKERS else "qcluster pusher")
                members.append((child, role))
                members += [(forked, "qcluster task child") for forked in _children(child, recursive=True)]
        return members

    def members(self) -> list[tuple[psutil.Process, str]]:
        """Every descendant of serve (and serve) with its role, now."""
        found = [(self.serve, "serve (supervisor)")]
        for child in _children(self.serve):
            command = _cmdline(child)
            if "gunicorn" in command:
                found.append((child, "gunicorn master"))
                found += [(worker, "gunicorn worker") for worker in _children(child, recursive=True)]
            elif "daphne" in command:
                found.append((child, "daphne"))
            elif "qcluster" in command:
                found += self.qcluster_members(child)
            else:
                found.append((child, "other"))
        return found

    def track(self, process: psutil.Process, role: str) -> Tracked | None:
        key = (process.pid, _created(process))
        if key[1] == math.inf:
            return None
        with self._lock:
            if key not in self.tracked:
                self._per_role[role] = self._per_role.get(role, 0) + 1
                self.tracked[key] = Tracked(pid=process.pid, role=role, label=f"{role} #{self._per_role[role]}",
                                            created=key[1])
            return self.tracked[key]

    def leftovers(self) -> list[psutil.Process]:
        """Processes seen during the soak that still run (after serve was stopped, none should)."""
        alive = []
        for key in list(self.tracked):
            try:
                process = psutil.Process(key[0])
                if abs(process.create_time() - key[1]) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                continue
        return alive


class ProcessSampler:
    """Samples the RSS of every process of serve's tree every ``interval_s`` seconds, on a thread."""

    def __init__(self, tree: ServeTree, *, interval_s: float) -> None:
        self.tree, self.interval_s = tree, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def sample_once(self) -> None:
        now = time.time()
        for process, role in self.tree.members():
            tracked = self.tree.track(process, role)
            if tracked is None:
                continue
            try:
                rss = process.memory_info().rss
                cpu = process.cpu_times()
            except psutil.Error:
                continue
            if rss == 0:  # a killed process not yet reaped (a zombie) reports no memory
                continue
            tracked.samples.append((now, rss / 2**20))
            tracked.cpu_s = cpu.user + cpu.system

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval_s)


def rss_growth(tracked: Tracked, *, soak_start: float, soak_end: float, warmup_s: float) -> dict[str, Any]:
    """Growth of one process's RSS over the soak: median of its last 10 % of samples minus the median of
    its first 10 % after the warm-up (``warmup_s`` from when the soak or the process started, whichever
    is later). None when fewer than ``MIN_SAMPLES`` samples remain after the warm-up."""
    inside = [(t, mb) for t, mb in tracked.samples if soak_start <= t <= soak_end]
    begin = max(soak_start, tracked.created)
    after = [mb for t, mb in inside if t >= begin + warmup_s]
    lifetime = (inside[-1][0] - begin) if inside else 0.0
    step = max(1, len(inside) // SERIES_POINTS)
    row: dict[str, Any] = {
        "label": tracked.label, "role": tracked.role, "pid": tracked.pid, "lifetime_s": round(lifetime, 1),
        "cpu_s": round(tracked.cpu_s, 1),
        "samples": len(inside), "samples_after_warmup": len(after),
        "rss_mb_series": [[round(t - soak_start, 1), round(mb, 1)] for t, mb in inside[::step]],
    }
    if len(after) < MIN_SAMPLES:
        return {**row, "first_mb": None, "last_mb": None, "growth_mb": None,
                "why_none": f"{len(after)} samples after the warm-up (< {MIN_SAMPLES}): lived too briefly in the soak"}
    k = max(3, math.ceil(0.1 * len(after)))
    first, last = statistics.median(after[:k]), statistics.median(after[-k:])
    return {**row, "first_mb": round(first, 1), "last_mb": round(last, 1), "growth_mb": round(last - first, 1),
            "peak_mb": round(max(mb for _, mb in inside), 1)}
