"""A small HTTP/1.1 load generator, run as its own process by ``bench_serving``.

``python -m bench.serving_loadgen '<json spec>'`` opens ``concurrency`` keep-alive
connections to a loopback server, sends the same request over each as fast as answers
come back, for ``duration_s`` seconds (or ``max_requests``), and prints one JSON line:
requests, errors, status counts, requests/s and latency percentiles. Raw asyncio streams,
so the generator costs far less per request than the server it measures.

With ``rate`` (requests/s) the load is open-loop: request i is due at start + i / rate whatever
the server does, and is sent on the first free connection of the pool; its latency is measured
from when it was due, so time spent queued behind a slow server counts (no coordinated
omission). Requests still not sent ``duration_s`` + 5 s after the start are counted as
``not_sent``; the achieved rate says whether the server kept up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np


def _request_bytes(spec: dict) -> bytes:
    body = spec.get("body")
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [
        f"{spec['method']} {spec['path']} HTTP/1.1",
        f"Host: {spec['host']}:{spec['port']}",
        "Connection: keep-alive",
        "Accept: application/json",
    ]
    lines += [f"{k}: {v}" for k, v in spec.get("headers", {}).items()]
    if payload:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    chunked = False
    keep_alive = True  # HTTP/1.1's default
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


async def _worker(
    spec: dict,
    request: bytes,
    stop_at: float,
    budget: list[int],
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    try:
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            writer.write(request)
            status, keep_alive = await _read_response(reader)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            statuses[status] = statuses.get(status, 0) + 1
            if not keep_alive:  # e.g. gunicorn's sync workers: one request per connection
                writer.close()
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    finally:
        writer.close()


async def run(spec: dict) -> dict:
    request = _request_bytes(spec)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    budget = [int(spec.get("max_requests", 10**9))]
    start = time.perf_counter()
    stop_at = start + float(spec["duration_s"])
    await asyncio.gather(
        *(
            _worker(spec, request, stop_at, budget, latencies, statuses)
            for _ in range(int(spec["concurrency"]))
        )
    )
    elapsed = time.perf_counter() - start
    arr = np.asarray(latencies) if latencies else np.asarray([np.nan])
    ok = statuses.get(200, 0)
    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": elapsed,
        "rps": ok / elapsed,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


async def _open_loop_worker(spec: dict, request: bytes, due: asyncio.Queue, latencies: list[float],
                            statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    try:
        while True:
            due_at = await due.get()
            if due_at is None:
                return
            if writer is None:  # connect when a request is due, as a client of such a server does
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
            writer.write(request)
            try:
                status, keep_alive = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                statuses[0] = statuses.get(0, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
                continue
            latencies.append((time.perf_counter() - due_at) * 1000.0)
            statuses[status] = statuses.get(status, 0) + 1
            if not keep_alive:
                # The server closes each connection (gunicorn's sync workers): the next request
                # connects when it is due (its connect time counts). An idle connection opened in
                # advance would hold a sync worker until a request came.
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def offer(due: asyncio.Queue, *, start: float, rate: float, n: int) -> None:
    """The open loop's schedule: request i is put on ``due`` at ``start + i / rate`` (its due time)."""
    for i in range(n):
        due_at = start + i / rate
        delay = due_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(due_at)


async def drain(due: asyncio.Queue, workers: list, *, give_up: float, stop_timeout_s: float) -> int:
    """Wait until ``give_up`` for the due requests to go out, then stop the workers; the number never sent."""
    while not due.empty() and time.perf_counter() < give_up:
        await asyncio.sleep(0.05)
    not_sent = 0
    while not due.empty():  # the server fell too far behind: these never went out
        due.get_nowait()
        not_sent += 1
    for _ in workers:
        due.put_nowait(None)
    await asyncio.wait(workers, timeout=stop_timeout_s)
    return not_sent


async def run_open_loop(spec: dict) -> dict:
    request = _request_bytes(spec)
    rate, duration = float(spec["rate"]), float(spec["duration_s"])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    due: asyncio.Queue = asyncio.Queue()
    workers = [asyncio.create_task(_open_loop_worker(spec, request, due, latencies, statuses))
               for _ in range(int(spec["concurrency"]))]
    start = time.perf_counter()
    n = int(rate * duration)
    await offer(due, start=start, rate=rate, n=n)
    sent_all = time.perf_counter()
    not_sent = await drain(due, workers, give_up=start + duration + 5.0, stop_timeout_s=30)
    elapsed = time.perf_counter() - start
    arr = np.asarray(latencies) if latencies else np.asarray([np.nan])
    ok = statuses.get(200, 0)
    return {
        "offered_rps": rate, "scheduled": n, "requests": len(latencies), "ok": ok, "not_sent": not_sent,
        "errors": n - ok, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": elapsed, "schedule_s": sent_all - start, "achieved_rps": ok / max(elapsed, duration),
        "p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)), "max_ms": float(np.max(arr)),
    }


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run_open_loop(spec) if spec.get("rate") else run(spec))))
