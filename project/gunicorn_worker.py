"""The web tier's gunicorn worker: ``gthread``, except that a new connection waits for its first
bytes in the worker's poller instead of in one of its threads.

gunicorn's ``gthread`` worker hands every accepted connection straight to a thread, which then
waits up to five seconds for the request to arrive. A client that opens connections before it
needs them — a browser's preconnect, a pooled HTTP client, a load generator — holds a thread per
idle connection for those five seconds; with four threads per process a handful of idle
connections stops the process from answering anyone (measured on this project's predict
endpoint: 64 pooled connections at 2,000 requests/s offered got ~1,000/s through with seconds of
latency). Here an accepted connection goes to the poller as gunicorn's own "pending" connections
do after their thread gave up on them: a thread is taken only once bytes have arrived, and a
connection that sends nothing is closed after the keep-alive timeout without costing a thread.
"""

from __future__ import annotations

import errno
import selectors
import time
from functools import partial

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker


class PollingThreadWorker(ThreadWorker):
    """``gunicorn --worker-class project.gunicorn_worker.PollingThreadWorker``."""

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


__all__ = ["PollingThreadWorker"]
