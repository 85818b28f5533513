"""The web tier's gunicorn worker (``project.gunicorn_worker``): connections that send nothing do not
take the threads that answer the others. With gunicorn's plain ``gthread`` worker each accepted
connection waits for its request in a thread for up to five seconds, so 24 idle connections on one
process with four threads hold back a real request for about 30 s (six rounds of four)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import urllib.request
from collections import Counter

import pytest

from tests.distributed.services import wait_for
from tests.workers import ROOT, free_port, stop_process, web_tier

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


WORKERS = 3
POOL = 30


def _answer_pid(sock: socket.socket) -> int:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0]):
        chunk = sock.recv(4096)
        assert chunk, "the server closed a kept-alive connection"
        data += chunk
    return int(data.split(b"\r\n\r\n", 1)[1])


@pytest.fixture
def three_workers(tmp_path):
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tests.project.pid_app:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(WORKERS), "--worker-class", "project.gunicorn_worker.PollingThreadWorker",
         "--threads", "4", "--keep-alive", "30"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def every_worker_answers() -> bool:
            seen = set()
            for _ in range(60):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    seen.add(_answer_pid(s))
            return len(seen) == WORKERS

        wait_for(every_worker_answers, timeout_s=120, interval_s=0.5, what=f"{WORKERS} gunicorn workers answering")
        yield port
    finally:
        stop_process(server)
        log.close()


def test_a_pool_of_kept_alive_connections_is_spread_over_the_processes(three_workers):
    """A client that opens its whole pool at once gets it spread over the workers (each within a
    couple of connections of an even share), not piled on whichever process woke first."""
    pool = [socket.create_connection(("127.0.0.1", three_workers), timeout=30) for _ in range(POOL)]
    try:
        pids = [_answer_pid(sock) for sock in pool]
        # Each connection stays with its process: asking again on it reaches the same one.
        assert [_answer_pid(sock) for sock in pool] == pids
    finally:
        for sock in pool:
            with contextlib.suppress(OSError):
                sock.close()
    per_process = Counter(pids)
    assert len(per_process) == WORKERS, per_process
    assert min(per_process.values()) >= POOL // WORKERS - 3, per_process
