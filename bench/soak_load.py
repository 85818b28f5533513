"""The soak's open-loop load generator: a constant arrival rate for many minutes, every answer timestamped.

``python -m bench.soak_load '<json spec>'`` sends ``rate`` requests per second for ``duration_s``
seconds to a loopback server and writes its findings to ``spec["out"]`` (JSON). Request i is due at
start + i / rate whatever the server does and goes out on the first free connection of a pool of
``concurrency`` keep-alive connections; its latency counts from when it was due (no coordinated
omission), as in ``bench/serving_loadgen.py``, whose request and response code it reuses.

A soak needs more than that generator's totals: every answer is counted by status in one-second
buckets of wall-clock time (``time.time()``, so the benchmark can set them against the moments it
killed a worker), each 5xx, failed connection and timed-out request is kept with its own timestamp,
and latency percentiles are reported minute by minute (a server that slowly degrades shows as a
drift). A connection that fails is opened again when the next request is due, so one failure does
not take a connection out of the pool for the rest of the soak.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.serving_loadgen import _read_response, _request_bytes, drain, offer

#: Seconds a request may wait for its answer before it counts as timed out (status -1).
REQUEST_TIMEOUT_S = 60.0
#: Requests still queued this long after the last one was due are counted as not sent.
DRAIN_S = 30.0
#: Failures kept one by one (status and timestamps); beyond this only the counts grow.
MAX_FAILURES_KEPT = 20_000
CONNECTION_FAILED = 0
TIMED_OUT = -1


class Tally:
    """Answers by status per wall-clock second, failures with their times, latencies per minute."""

    def __init__(self, start_wall: float, start_perf: float) -> None:
        self.start_wall, self.start_perf = start_wall, start_perf
        self.per_second: dict[int, Counter[int]] = {}
        self.latencies: dict[int, list[float]] = {}
        self.failures: list[dict[str, Any]] = []
        self.failures_dropped = 0
        self.stale_retries = 0

    def wall(self, perf: float) -> float:
        return self.start_wall + (perf - self.start_perf)

    def record(self, due_perf: float, status: int) -> None:
        now = time.perf_counter()
        second = int(now - self.start_perf)
        self.per_second.setdefault(second, Counter())[status] += 1
        if status >= 200:
            self.latencies.setdefault(second // 60, []).append((now - due_perf) * 1000.0)
        if status >= 500 or status <= CONNECTION_FAILED:
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append({"status": status, "at": round(self.wall(now), 3),
                                      "due": round(self.wall(due_perf), 3)})
            else:
                self.failures_dropped += 1

    def summary(self) -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        for counts in self.per_second.values():
            statuses.update(counts)
        minutes = []
        for minute, values in sorted(self.latencies.items()):
            arr = np.asarray(values)
            minutes.append({"minute": minute, "answered": len(values), "p50_ms": round(float(np.percentile(arr, 50)), 2),
                            "p99_ms": round(float(np.percentile(arr, 99)), 2), "max_ms": round(float(arr.max()), 2)})
        every = np.concatenate([np.asarray(v) for v in self.latencies.values()]) if self.latencies else np.asarray([np.nan])
        return {
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "per_second": [{"t": round(self.start_wall + s, 3), **{str(k): v for k, v in sorted(c.items())}}
                           for s, c in sorted(self.per_second.items())],
            "per_minute": minutes,
            "p50_ms": float(np.percentile(every, 50)), "p99_ms": float(np.percentile(every, 99)),
            "max_ms": float(np.max(every)),
            "failures": self.failures, "failures_dropped": self.failures_dropped, "stale_retries": self.stale_retries,
        }


def _stale(exc: BaseException) -> bool:
    """The server had closed a kept-alive connection before the request reached it (no byte of an answer)."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, ConnectionResetError | BrokenPipeError)


async def _exchange(spec: dict, request: bytes, reader: asyncio.StreamReader | None,
                    writer: asyncio.StreamWriter | None, tally: Tally):
    """Send one request and read its answer: (status, keep_alive, reader, writer).

    A request sent on a kept-alive connection that the server had already closed (it answered
    nothing) is sent again once on a new connection, as HTTP clients do with a stale pooled
    connection; ``tally.stale_retries`` counts those.
    """
    for attempt in (1, 2):
        fresh = writer is None or reader is None
        if writer is None or reader is None:
            reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        try:
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, keep_alive = await _read_response(reader)
            return status, keep_alive, reader, writer
        except (OSError, asyncio.IncompleteReadError) as exc:  # TimeoutError is an OSError
            writer.close()
            reader = writer = None
            if fresh or attempt == 2 or not _stale(exc):
                raise
            tally.stale_retries += 1
        except (ValueError, IndexError):  # a garbled answer: this connection is done
            writer.close()
            raise
    raise AssertionError("unreachable")


async def _connection(spec: dict, request: bytes, due: asyncio.Queue, tally: Tally) -> None:
    """One keep-alive connection of the pool: take the next due request, send it, record the answer."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while True:
        due_at = await due.get()
        if due_at is None:
            break
        try:
            status, keep_alive, reader, writer = await _exchange(spec, request, reader, writer, tally)
        except TimeoutError:
            tally.record(due_at, TIMED_OUT)
            keep_alive = False
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            # Refused, reset, closed mid-answer or a garbled head: the client saw no answer.
            tally.record(due_at, CONNECTION_FAILED)
            keep_alive = False
        else:
            tally.record(due_at, status)
        if not keep_alive:
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_soak_load(spec: dict) -> dict[str, Any]:
    request = _request_bytes(spec)
    rate, duration = float(spec["rate"]), float(spec["duration_s"])
    due: asyncio.Queue = asyncio.Queue()
    start_perf, start_wall = time.perf_counter(), time.time()
    tally = Tally(start_wall, start_perf)
    pool = [asyncio.create_task(_connection(spec, request, due, tally)) for _ in range(int(spec["concurrency"]))]
    scheduled = int(rate * duration)
    await offer(due, start=start_perf, rate=rate, n=scheduled)
    not_sent = await drain(due, pool, give_up=time.perf_counter() + DRAIN_S, stop_timeout_s=REQUEST_TIMEOUT_S + 5)
    elapsed = time.perf_counter() - start_perf
    summary = tally.summary()
    answered = sum(v for k, v in summary["statuses"].items() if int(k) >= 200)
    return {"offered_rps": rate, "duration_s": duration, "scheduled": scheduled, "not_sent": not_sent,
            "answered": answered, "seconds": elapsed, "start": start_wall, "end": start_wall + elapsed,
            "cpu_s": time.process_time(),  # the generator's own CPU time: it shares the cores with the server
            "achieved_rps": summary["statuses"].get("200", 0) / max(elapsed, duration), **summary}


if __name__ == "__main__":
    soak_spec = json.loads(sys.argv[1])
    result = asyncio.run(run_soak_load(soak_spec))
    Path(soak_spec["out"]).write_text(json.dumps(result), encoding="utf-8")
