"""The web tier's gunicorn worker: ``gthread``, with two changes.

**A new connection waits for its first bytes in the worker's poller instead of in one of its
threads.** gunicorn's ``gthread`` worker hands every accepted connection straight to a thread,
which then waits up to five seconds for the request to arrive. A client that opens connections
before it needs them — a browser's preconnect, a pooled HTTP client, a load generator — holds a
thread per idle connection for those five seconds; with four threads per process a handful of
idle connections stops the process from answering anyone (measured on this project's predict
endpoint: 64 pooled connections at 2,000 requests/s offered got ~1,000/s through with seconds of
latency). Here an accepted connection goes to the poller as gunicorn's own "pending" connections
do after their thread gave up on them: a thread is taken only once bytes have arrived, and a
connection that sends nothing is closed after the keep-alive timeout without costing a thread.

**The processes share the open connections.** All workers accept from one listening socket, and
whichever wakes first takes the connection. Kept-alive connections stay with the process that
accepted them, so a client that opens its pool at once (a load balancer, a pooled HTTP client)
can land most of its connections on one process — which then runs on one core under its GIL
while the others idle (measured: closed-loop predict rounds at 2,500–2,900 requests/s when the
32 connections were spread, 1,160–1,260/s when they were not). Each worker publishes its number
of open connections in a small table shared by the master's children and stops accepting while
it holds more than ``FAIR_SLACK`` connections above the least-loaded live worker; the
least-loaded worker always accepts, so no connection waits for a slot.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import selectors
import time
from functools import partial

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

#: Rows of the shared table (a worker's row is its age modulo this: gunicorn's ages only grow, so two
#: live workers share a row only after this many respawns while the older one lives).
SLOTS = 32
#: Connections a worker may hold above the least-loaded live worker and still accept.
FAIR_SLACK = 1
#: A row not refreshed for this long belongs to a worker that died or hangs: it is not compared.
STALE_S = 3.0
#: How soon a worker that stopped accepting for fairness looks again when nothing else wakes it.
RECHECK_S = 0.05
#: How long a worker reuses the others' least count: reading the table on every event of the
#: worker's loop cost about 2 % of a predict request's time (py-spy), and a few milliseconds of
#: staleness only lets a worker take one connection more or less.
READ_EVERY_S = 0.005

# Created when the master imports this module (gunicorn loads the worker class before forking),
# so every worker of that master maps the same pages: per row, [pid, open connections, heartbeat].
_TABLE = multiprocessing.RawArray(ctypes.c_double, SLOTS * 3)


class ConnectionTable:
    """The master's children's open-connection counts, one row per live worker."""

    def __init__(self, table=_TABLE, slots: int = SLOTS) -> None:
        self.table = table
        self.slots = slots

    def publish(self, slot: int, *, pid: int, connections: int, now: float) -> None:
        base = 3 * (slot % self.slots)
        self.table[base] = pid
        self.table[base + 1] = connections
        self.table[base + 2] = now

    def clear(self, slot: int, *, pid: int) -> None:
        base = 3 * (slot % self.slots)
        if self.table[base] == pid:
            self.table[base] = 0
            self.table[base + 2] = 0

    def least_other(self, slot: int, *, now: float) -> float | None:
        """The fewest open connections of any other live worker; None when there is none."""
        mine = 3 * (slot % self.slots)
        values = self.table[:]  # one copy out of shared memory, then plain floats
        least = None
        for base in range(0, len(values), 3):
            if base == mine or values[base] == 0 or now - values[base + 2] > STALE_S:
                continue
            count = values[base + 1]
            if least is None or count < least:
                least = count
        return least


class PollingThreadWorker(ThreadWorker):
    """``gunicorn --worker-class project.gunicorn_worker.PollingThreadWorker``."""

    connection_table = ConnectionTable()

    def init_process(self) -> None:
        self._slot = self.age
        self._own_pid = os.getpid()
        self._fair = True
        self._least: float | None = None
        self._least_at = float("-inf")
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.connection_table.clear(self._slot, pid=self._own_pid)

    def fair_share(self) -> bool:
        """True while this worker holds no more than ``FAIR_SLACK`` connections above the least-loaded other."""
        now = time.monotonic()
        self.connection_table.publish(self._slot, pid=self._own_pid, connections=self.nr_conns, now=now)
        if now - self._least_at >= READ_EVERY_S:
            self._least, self._least_at = self.connection_table.least_other(self._slot, now=now), now
        least = self._least
        self._fair = least is None or self.nr_conns <= least + FAIR_SLACK
        return self._fair

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks to accept whenever it has room; room is not enough while others hold fewer.
        super().set_accept_enabled(enabled and self.fair_share())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._accepting and not self.fair_share():
            super().set_accept_enabled(False)
        if not self._fair and self.alive:
            timeout = min(timeout, RECHECK_S)
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(False)
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        # As long as a thread would have waited for the first bytes (or the keep-alive timeout, if longer).
        conn.timeout = time.monotonic() + max(float(self.cfg.keepalive), DEFAULT_WORKER_DATA_TIMEOUT)
        self.pending_conns.append(conn)
        self.poller.register(client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))


__all__ = ["ConnectionTable", "PollingThreadWorker"]
