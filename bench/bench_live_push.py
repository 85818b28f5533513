"""Live push latency: an event published by a worker process, to its arrival in a WebSocket client.

A real daphne server (the project's ASGI application) runs against a fresh database in a
temporary ``PLASTICITY_VAR_DIR``. A WebSocket client logs in with a session cookie and the
site's origin and listens on ``/ws/live/``. A separate worker process then calls
``publish()`` inside a transaction a few hundred times, stamping each payload with its send
time (``time.time()``, same machine); the client stamps the arrival time.

* embedded — no Redis: the in-memory channel layer of the web process, fed by the outbox
  relay (``project/live/relay.py``) polling every 0.2 s; the worker only writes outbox rows.
* redis — ``REDIS_URL=redis://127.0.0.1:6379/15`` for both processes: the worker pushes on
  commit through channels_redis (the relay stays off). Skipped with a note when Redis does
  not answer.

Targets (from the issue): p95 under 500 ms embedded, under 100 ms with Redis. Events are
spaced ``INTERVAL_S`` apart so the numbers are latencies, not queueing under a burst; the
first ``WARMUP`` events of each mode (connection set-up) are left out of the percentiles.

Roles: ``python -m bench.bench_live_push setup|publish ...`` are the subprocesses' entry
points (each sets Django up for the temporary database itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from bench.common import target

NAME = "live_push"
DESCRIPTION = "worker publish() → WebSocket client through daphne: p50/p95, embedded (outbox relay) and Redis"

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/15"
N_EVENTS = 300
INTERVAL_S = 0.02
WARMUP = 10
TARGET_EMBEDDED_MS = 500.0
TARGET_REDIS_MS = 100.0
EVENT_TYPE = "bench.ping"


# ------------------------------------------------------------------------------ processes


def _env(var_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "PLASTICITY_OUTBOX_RELAY", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({"PLASTICITY_VAR_DIR": var_dir, "DJANGO_SETTINGS_MODULE": "project.settings",
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING", **extra})
    return env


def _python(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _daphne(env: dict[str, str], log: Path):
    port = _free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):  # noqa: S310 - local server
                    break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def redis_reachable(url: str = REDIS_URL) -> str | None:
    """None when Redis answers, else why not."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "skip the Redis half"
        return f"{type(exc).__name__}: {exc}"
    return None


# ------------------------------------------------------------------------------ measuring


async def _listen(url: str, session: str, tag: str, n: int, ready: asyncio.Event, timeout_s: float) -> dict[int, float]:
    """Collect arrival times of this run's events (seq -> latency in ms)."""
    from websockets.asyncio.client import connect

    ws_url = url.replace("http://", "ws://") + "/ws/live/"
    latencies: dict[int, float] = {}
    async with connect(ws_url, additional_headers={"Origin": url, "Cookie": f"sessionid={session}"},
                       max_queue=None) as ws:
        ready.set()
        deadline = time.monotonic() + timeout_s
        while len(latencies) < n and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            arrived = time.time()
            message = json.loads(raw)
            payload = message.get("payload") or {}
            if message.get("type") == EVENT_TYPE and payload.get("tag") == tag:
                latencies.setdefault(payload["seq"], (arrived - payload["sent_at"]) * 1000.0)
    return latencies


async def _measure_async(url: str, session: str, env: dict[str, str], n: int) -> tuple[dict[int, float], float]:
    tag = uuid.uuid4().hex[:12]
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(url, session, tag, n, ready, timeout_s=60 + n * INTERVAL_S * 3))
    await asyncio.wait_for(ready.wait(), 30)
    started = time.perf_counter()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_live_push", "publish", "--count", str(n), "--interval", str(INTERVAL_S),
        "--tag", tag, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await publisher.communicate()
    if publisher.returncode != 0:
        listener.cancel()
        raise RuntimeError(f"publisher failed:\n{err.decode(errors='replace')[-3000:]}")
    latencies = await listener
    return latencies, time.perf_counter() - started


def measure(env: dict[str, str], session: str, log: Path, *, n: int = N_EVENTS) -> dict:
    with _daphne(env, log) as url:
        latencies, seconds = asyncio.run(_measure_async(url, session, env, n))
    ordered = [latencies[seq] for seq in sorted(latencies) if seq >= WARMUP]
    values = np.asarray(ordered) if ordered else np.asarray([np.nan])
    return {
        "events": n, "received": len(latencies), "lost": n - len(latencies),
        "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)), "max_ms": float(np.max(values)),
        "seconds": round(seconds, 1),
    }


def run() -> dict:
    rows, targets, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="plasticity-bench-live-") as var_dir:
        env = _env(var_dir)
        _python(env, "manage.py", "migrate", "--noinput")
        session = _python(env, "-m", "bench.bench_live_push", "setup").strip().splitlines()[-1]

        embedded = measure(_env(var_dir, PLASTICITY_OUTBOX_RELAY="1"), session, Path(var_dir) / "daphne-embedded.log")
        rows.append({"mode": "embedded: outbox relay → in-memory layer", **embedded})
        targets.append(target("p95 embedded", f"< {TARGET_EMBEDDED_MS:g} ms", embedded["p95_ms"],
                              embedded["p95_ms"] < TARGET_EMBEDDED_MS and embedded["lost"] == 0))

        why_not = redis_reachable()
        if why_not is None:
            redis = measure(_env(var_dir, REDIS_URL=REDIS_URL), session, Path(var_dir) / "daphne-redis.log")
            rows.append({"mode": "redis: push on commit (channels_redis)", **redis})
            targets.append(target("p95 with Redis", f"< {TARGET_REDIS_MS:g} ms", redis["p95_ms"],
                                  redis["p95_ms"] < TARGET_REDIS_MS and redis["lost"] == 0))
        else:
            notes.append(f"Redis half skipped: {REDIS_URL} unreachable ({why_not})")
            targets.append(target("p95 with Redis", f"< {TARGET_REDIS_MS:g} ms (skipped: no Redis)", None, False))
    notes.append(f"{N_EVENTS} events per mode, {INTERVAL_S * 1000:g} ms apart; the first {WARMUP} are warm-up and "
                 "left out of the percentiles; a target also requires that no event was lost.")
    return {"table": rows, "targets": targets, "notes": notes,
            "params": {"events": N_EVENTS, "interval_s": INTERVAL_S, "warmup": WARMUP, "redis_url": REDIS_URL}}


# ------------------------------------------------------------------------------ subprocess roles


def _django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()


def role_setup() -> None:
    """Create the listening user and print a session key for its cookie."""
    _django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username="bench-viewer")
    client = Client()
    client.force_login(user)
    print(client.cookies["sessionid"].value)


def role_publish(count: int, interval: float, tag: str) -> None:
    """The worker: publish ``count`` events, each in its own transaction, stamped with its send time."""
    _django()
    from django.db import transaction

    from events.publisher import publish

    for seq in range(count):
        with transaction.atomic():
            publish(EVENT_TYPE, {"tag": tag, "seq": seq, "sent_at": time.time()})
        time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_live_push")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("setup")
    publish = sub.add_parser("publish")
    publish.add_argument("--count", type=int, default=N_EVENTS)
    publish.add_argument("--interval", type=float, default=INTERVAL_S)
    publish.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    if args.role == "setup":
        role_setup()
    else:
        role_publish(args.count, args.interval, args.tag)


if __name__ == "__main__":
    main()
