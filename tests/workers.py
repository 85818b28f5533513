"""Real django-q2 worker processes (qcluster) and web servers (daphne, ``manage.py serve``) against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def worker_env(*, workers: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:"
                               f"{db['PORT'] or 5432}/{db['NAME']}")
    env.update({
        # The same key as this process: task packages are signed with it, sessions hashed with it.
        "SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "project.settings", "PLASTICITY_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "Q_WORKERS": str(workers), "Q_POLL": "0.1", "PYTHONUNBUFFERED": "1", "PLASTICITY_TORCH_THREADS": "1",
        "PLASTICITY_CHECK_EVENT_PAYLOADS": "1",
        "PLASTICITY_OPTUNA_STORAGE": settings.PLASTICITY_OPTUNA_STORAGE,
        "PLASTICITY_ALGORITHM_MODULES": ",".join(settings.PLASTICITY_ALGORITHM_MODULES),
        **extra,
    })
    return env


@contextlib.contextmanager
def qcluster(*, workers: int = 1, log_path: Path | None = None, **extra: str):
    """Start ``manage.py qcluster`` with ``workers`` worker processes; stop it on exit."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=worker_env(workers=workers, **extra),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_process(process)
        if log_path:
            log.close()


def stop_process(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def daphne(*, log_path: Path, start_timeout_s: float = 60.0, **extra: str):
    """Start the ASGI web server (pages, API, WebSockets) on a free port; yield (base URL, process).

    It sees what the tests see (``worker_env``); ``ALLOWED_HOSTS`` covers 127.0.0.1, so a
    WebSocket client sends ``Origin: <base URL>``.
    """
    port = free_port()
    env = worker_env(**{"ALLOWED_HOSTS": "127.0.0.1,localhost", **extra})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path, start_timeout_s, "daphne")
        yield url, process
    finally:
        stop_process(process)


@contextlib.contextmanager
def web_tier(*, log_path: Path, start_timeout_s: float = 60.0, web_workers: int = 2, workers: int = 0, **extra: str):
    """Start the deployed web tier (``manage.py serve --workers 0``, or with ``workers`` django-q2
    workers): gunicorn processes for HTTP on one free port, daphne for /ws/ on another. Yield
    (HTTP base URL, WebSocket base URL, process)."""
    port, ws_port = free_port(), free_port()
    env = worker_env(**{"ALLOWED_HOSTS": "127.0.0.1,localhost", **extra})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), "--ws-port", str(ws_port), "--workers", str(workers),
             "--web-workers", str(web_workers)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path, start_timeout_s, "manage.py serve")
        _wait_healthy(f"http://127.0.0.1:{ws_port}", process, log_path, start_timeout_s, "its WebSocket server")
        yield url, f"ws://127.0.0.1:{ws_port}", process
    finally:
        stop_process(process)


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float, name: str) -> None:
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310 - local server
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer within {timeout_s:g} s (last: {last}):\n"
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
