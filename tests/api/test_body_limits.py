"""Request bodies above their path's limit are refused before anything reads them, for anyone."""

from __future__ import annotations

import select
import socket
import time

import psutil
import pytest
from django.test import Client

from models_registry.serving.conf import serving_setting
from project.middleware import request_body_limit

pytestmark = pytest.mark.django_db

MIB = 2**20


def test_each_path_has_its_limit(settings):
    settings.PLASTICITY_UPLOAD_MAX_BYTES = 20 * MIB
    assert request_body_limit("/api/tasks") > 20 * MIB  # the file plus the form's other fields
    assert request_body_limit("/api/tasks/digits/predict") == serving_setting("PLASTICITY_PREDICT_MAX_BYTES")
    assert request_body_limit("/api/config") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert request_body_limit("/admin/login/") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_a_declared_oversized_body_is_a_413_before_authentication(bob):
    anonymous = Client()
    for path in ("/api/tasks", "/api/tasks/any/predict", "/api/config", "/api/ping"):
        limit = request_body_limit(path)
        response = anonymous.generic("POST", path, b"x", content_type="application/json",
                                     CONTENT_LENGTH=str(limit + 1))
        assert response.status_code == 413, path  # not 401: the body is judged first, and not read
        error = response.json()["error"]
        assert error["code"] == "payload_too_large" and error["details"]["limit_bytes"] == limit
        assert "the limit for" in error["message"]
    page = anonymous.generic("POST", "/accounts/login/", b"x", CONTENT_LENGTH=str(50 * MIB))
    assert page.status_code == 413 and page["Content-Type"].startswith("text/html")


def _worker_rss(serve: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in serve.children(recursive=True) if "gunicorn" in " ".join(p.cmdline()))


def _answer(sock: socket.socket, timeout_s: float = 60.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 1.0)
        if ready:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    return data


@pytest.mark.django_db(transaction=True)
def test_an_anonymous_200_mb_upload_does_not_grow_the_web_process(tmp_path):
    """On the deployed tier (gunicorn): a 200 MB upload declared by an anonymous client, and one
    sent chunked (no length), are refused with 413; the web processes grow by under 50 MB."""
    from tests.workers import web_tier

    with web_tier(log_path=tmp_path / "serve.log", web_workers=1, start_timeout_s=120) as (url, _, process):
        port = int(url.rsplit(":", 1)[1])
        serve = psutil.Process(process.pid)
        before = _worker_rss(serve)

        declared = socket.create_connection(("127.0.0.1", port), timeout=60)
        declared.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                         b"boundary=x\r\nContent-Length: %d\r\n\r\n" % (200 * MIB))
        answer = _answer(declared)
        declared.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]

        chunked = socket.create_connection(("127.0.0.1", port), timeout=60)
        chunked.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                        b"boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (200 * MIB))
        # One chunk announced as 200 MB, of which 64 KiB more than the limit is sent (the server
        # reads in steps of at least 1 KiB; sending far more would only race its close); the
        # server must answer without the rest.
        limit = request_body_limit("/api/tasks")
        sent = 0
        while sent < limit + 64 * 1024:
            piece = min(MIB, limit + 64 * 1024 - sent)
            chunked.sendall(b"x" * piece)
            sent += piece
        answer = _answer(chunked)
        chunked.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        growth = _worker_rss(serve) - before
        assert growth < 50 * MIB, f"web processes grew by {growth / MIB:.1f} MB"
