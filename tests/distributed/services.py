"""Faults on the real services, and small clients for the tests that inject them.

The machine is shared: every outage is as short as the test allows, and the service is
started again in a ``finally`` block whatever happens inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connections


def ci() -> bool:
    return os.environ.get("CI") == "true"


def require(ok: bool, message: str) -> None:
    """Skip with ``message`` unless CI=true, where a missing prerequisite is a failure."""
    if ok:
        return
    if ci():
        pytest.fail(f"{message} (the distributed tests are mandatory with CI=true)", pytrace=False)
    pytest.skip(f"{message}; skipped because CI is not 'true'")


def wait_for(condition: Callable[[], object], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition",
             detail: Callable[[], object] = lambda: ""):
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s``,
    with ``detail()`` in the message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s:g} s {detail()}")
        time.sleep(interval_s)


def cluster_ready(log_path: Path, *, timeout_s: float = 90.0) -> None:
    """Wait until the qcluster logging to ``log_path`` has started its workers and its pusher."""
    def ready():
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return "ready for work" in text and "pushing tasks" in text and "running." in text

    wait_for(ready, timeout_s=timeout_s, interval_s=0.2, what=f"qcluster ({log_path.name}) ready")


# --------------------------------------------------------------------------------- PostgreSQL


def _pg_cluster() -> tuple[str, str]:
    """(version, name) of the local cluster serving the test database's port."""
    require(shutil.which("pg_ctlcluster") is not None and shutil.which("pg_lsclusters") is not None,
            "stopping PostgreSQL needs pg_ctlcluster (postgresql-common) on this machine")
    port = str(settings.DATABASES["default"].get("PORT") or 5432)
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, name
    require(False, f"no local PostgreSQL cluster listens on port {port}")
    raise AssertionError("unreachable")


def _pg_ctl(action: str) -> None:
    version, name = _pg_cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                   check=True, capture_output=True, timeout=120)


def postgres_ready() -> bool:
    import psycopg

    db = settings.DATABASES["default"]
    try:
        with psycopg.connect(host=db.get("HOST") or "127.0.0.1", port=int(db.get("PORT") or 5432),
                             user=db.get("USER") or None, dbname="postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def postgres_stopped():
    """Stop PostgreSQL for the block; always start it again and reconnect this process."""
    _pg_cluster()  # skip (or fail under CI) before touching anything
    connections.close_all()
    try:
        _pg_ctl("stop")
        yield
    finally:
        for attempt in range(3):
            try:
                _pg_ctl("start")
                break
            except subprocess.CalledProcessError:
                if postgres_ready():
                    break
                time.sleep(1 + attempt)
        wait_for(postgres_ready, timeout_s=60, what="PostgreSQL accepting connections again")
        connections.close_all()


# -------------------------------------------------------------------------------------- Redis


def redis_url() -> str:
    return os.environ["REDIS_URL"]


def redis_ready() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(redis_url(), socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_restart(*, down_s: float = 1.0) -> None:
    """Shut Redis down without saving (its data is gone, as after a crash) and start it again."""
    require(shutil.which("redis-cli") is not None and shutil.which("redis-server") is not None,
            "restarting Redis needs redis-cli and redis-server on this machine")
    url = urlparse(redis_url())
    host, port = url.hostname or "127.0.0.1", str(url.port or 6379)
    require(host in ("127.0.0.1", "localhost"), f"Redis at {host} is not local; it cannot be restarted here")
    try:
        subprocess.run(["redis-cli", "-h", host, "-p", port, "shutdown", "nosave"], capture_output=True, timeout=30)
        wait_for(lambda: not redis_ready(), timeout_s=15, what="Redis stopped")
        time.sleep(down_s)
    finally:
        if not redis_ready():
            subprocess.run(["redis-server", "--daemonize", "yes", "--bind", host, "--port", port, "--save", "",
                            "--appendonly", "no"], check=True, capture_output=True, timeout=30)
        wait_for(redis_ready, timeout_s=30, what="Redis answering again")


# ------------------------------------------------------------------------------------- clients


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> Answer:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local test server
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def session_cookie(user) -> str:
    """A logged-in session for ``user``, stored in the test database the web process reads."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@dataclass
class LiveClient:
    """A WebSocket client of /ws/live/ that behaves like the browser's (static/panel/live.js).

    It connects with ``?after=<newest id seen>``; when the server drops the connection it
    reconnects (backing off) with the newest id it saw, so the server replays what it missed.
    Every message is kept with the connection it arrived on and when.
    """

    base_url: str
    cookie: str
    after: int = 0
    messages: list[dict] = field(default_factory=list)
    connections: int = 0
    drops: int = 0
    _socket: object = None

    @property
    def ids(self) -> list[int]:
        return [m["id"] for m in self.messages if "id" in m]

    @property
    def last_id(self) -> int:
        return max(self.ids, default=self.after)

    def connect(self, *, timeout_s: float = 30.0) -> None:
        from websockets.sync.client import connect

        ws_url = self.base_url.replace("http://", "ws://") + f"/ws/live/?after={self.last_id}"
        deadline, delay = time.monotonic() + timeout_s, 0.2
        while True:
            try:
                # Entered as a context manager (websockets 17 warns otherwise); closed in close().
                self._socket = connect(ws_url, additional_headers={"Cookie": self.cookie}, origin=self.base_url,
                                       open_timeout=5).__enter__()
                self.connections += 1
                return
            except Exception:  # noqa: BLE001 - refused, 500, reset: the browser retries too
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def pump(self, *, seconds: float) -> None:
        """Receive for ``seconds``, reconnecting after a drop."""
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._socket is None:
                self.connect()
            try:
                raw = self._socket.recv(timeout=min(left, 1.0))
            except TimeoutError:
                continue
            except ConnectionClosed:
                self._socket = None
                self.drops += 1
                continue
            message = json.loads(raw)
            self.messages.append({**message, "_connection": self.connections, "_received": time.time()})

    def pump_until(self, condition: Callable[[LiveClient], bool], *, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {timeout_s:g} s "
                                     f"({len(self.messages)} messages, {self.drops} drops)")
            self.pump(seconds=0.5)


def weight_files(media_root: Path) -> set[str]:
    """Every file under MEDIA_ROOT/weights, as storage names."""
    folder = Path(media_root) / "weights"
    if not folder.exists():
        return set()
    return {p.relative_to(media_root).as_posix() for p in folder.rglob("*") if p.is_file()}
