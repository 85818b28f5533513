"""The web tier's gunicorn worker (``project.gunicorn_worker``): connections that send nothing do not
take the threads that answer the others. With gunicorn's plain ``gthread`` worker each accepted
connection waits for its request in a thread for up to five seconds, so 24 idle connections on one
process with four threads hold back a real request for about 30 s (six rounds of four)."""

from __future__ import annotations

import contextlib
import socket
import urllib.request

import pytest

from tests.distributed.services import wait_for
from tests.workers import web_tier

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

IDLE = 24
#: Far below the ~30 s the plain gthread worker needs here, far above a request's time on any machine.
ANSWER_DEADLINE_S = 15


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_connections_do_not_hold_back_requests_and_are_closed(tmp_path):
    with web_tier(log_path=tmp_path / "serve.log", web_workers=1) as (url, _, _process):
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(IDLE)]
        try:
            # A real request behind the idle connections is answered at once (the deadline only
            # fails the plain gthread worker, whose threads wait on the idle connections first).
            with urllib.request.urlopen(url + "/healthz", timeout=ANSWER_DEADLINE_S) as response:  # noqa: S310
                assert response.status == 200
            # The idle connections cost nothing meanwhile and are closed after the keep-alive timeout.
            wait_for(lambda: all(_closed_by_server(s) for s in idle), timeout_s=60, interval_s=0.5,
                     what="the server closing the idle connections")
        finally:
            for sock in idle:
                with contextlib.suppress(OSError):
                    sock.close()
