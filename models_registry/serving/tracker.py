"""The performance tracker: live latency, throughput and errors per implementation, in memory.

Each prediction adds its latency (the implementation's compute time) to the aggregate of
its (task, implementation, version) in this process: a count, an error count, rows served
and a bounded uniform reservoir of latencies (Vitter's algorithm R) from which p50/p95/p99
are read. Every ``PLASTICITY_TRACKER_FLUSH_S`` seconds (10 by default) the aggregates are
swapped out and written as one ``PerformanceSample(source="live")`` row per implementation
— never one row per request — by a background thread in servers, or inline when due in
tests and scripts. Shadow checks are aggregated the same way into ``source="shadow"`` rows
(score = agreement with the algorithm over the shadow window). Live inputs are sampled the same
way: a bounded uniform reservoir of rows per task (``record_inputs``), flushed as one
``InputSample`` per task and window (float32 ``.npy`` bytes) for the drift check.

``record`` takes one uncontended lock and does a few arithmetic operations; it never touches
the database.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from django.db import close_old_connections

from models_registry.choices import Implementation, SampleSource
from models_registry.models import InputSample, ModelVersion, PerformanceSample, Task
from models_registry.serving.conf import serving_setting
from models_registry.serving.drift import InputReservoir, reservoir_capacity

logger = logging.getLogger(__name__)

Key = tuple[int, str, int | None]  # (task id, implementation, version id)


@dataclass
class LatencyWindow:
    """Counts and a latency reservoir for one implementation between two flushes."""

    capacity: int
    started: float = field(default_factory=time.monotonic)
    n: int = 0
    errors: int = 0
    rows: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    reservoir: list[float] = field(default_factory=list)

    def add(self, latency_ms: float, rows: int, error: bool, rng: random.Random) -> None:
        self.n += 1
        self.rows += rows
        if error:
            self.errors += 1
        self.total_ms += latency_ms
        if latency_ms > self.max_ms:
            self.max_ms = latency_ms
        if len(self.reservoir) < self.capacity:
            self.reservoir.append(latency_ms)
        else:
            j = rng.randrange(self.n)
            if j < self.capacity:
                self.reservoir[j] = latency_ms

    def percentiles(self) -> tuple[float | None, float | None, float | None]:
        if not self.reservoir:
            return None, None, None
        p50, p95, p99 = np.percentile(np.asarray(self.reservoir), [50, 95, 99])
        return float(p50), float(p95), float(p99)


@dataclass
class ShadowWindow:
    """Shadow checks of one neural version between two flushes; ``agreement`` is the latest window value."""

    checks: int = 0
    rows: int = 0
    agreement: float | None = None
    floor: float | None = None
    window_rows: int = 0
    algorithm_ms: list[float] = field(default_factory=list)


class PerformanceTracker:
    """In-memory aggregates of this process, flushed periodically as performance samples."""

    def __init__(self, *, enabled: bool = True, flush_s: float = 10.0, reservoir: int = 2048,
                 background: bool = True, seed: int | None = None, input_rows: int = 256,
                 input_bytes: int = 256 * 1024, inputs_keep: int = 200, sample_inputs: bool = True) -> None:
        self.enabled = enabled
        self.sample_inputs = enabled and sample_inputs
        self.input_rows = max(1, int(input_rows))
        self.input_bytes = max(1024, int(input_bytes))
        self.inputs_keep = max(1, int(inputs_keep))
        self.flush_s = max(0.05, float(flush_s))
        self.capacity = max(16, int(reservoir))
        self.background = background
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._windows: dict[Key, LatencyWindow] = {}
        self._shadow: dict[tuple[int, int], ShadowWindow] = {}
        self._inputs: dict[int, InputReservoir] = {}
        self._last_flush = time.monotonic()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    # ------------------------------------------------------------------ hot path

    def record(self, *, task_id: int, implementation: str, version_id: int | None, latency_ms: float,
               rows: int = 1, error: bool = False) -> None:
        if not self.enabled:
            return
        key = (task_id, implementation, version_id)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = LatencyWindow(self.capacity)
            window.add(latency_ms, rows, error, self._rng)
        self._after_record()

    def record_inputs(self, *, task_id: int, X: np.ndarray) -> None:
        """Offer the rows of one request to the task's input reservoir (copies only the rows it keeps)."""
        if not self.sample_inputs:
            return
        with self._lock:
            reservoir = self._inputs.get(task_id)
            if reservoir is None:
                width = int(np.prod(X.shape[1:], dtype=np.int64))
                capacity = reservoir_capacity(width=width, rows=self.input_rows, max_bytes=self.input_bytes)
                reservoir = self._inputs[task_id] = InputReservoir(capacity=capacity, width=width)
            reservoir.add(X)

    def pending_inputs(self) -> dict[int, InputReservoir]:
        with self._lock:
            return dict(self._inputs)

    def record_shadow(self, *, task_id: int, version_id: int, rows: int, algorithm_ms: float,
                      agreement: float | None = None, floor: float | None = None, window_rows: int = 0,
                      requests: int = 1) -> None:
        """One shadow check of ``requests`` sampled requests run as one algorithm call (called by
        shadow workers, off the request path)."""
        with self._lock:
            window = self._shadow.get((task_id, version_id))
            if window is None:
                window = self._shadow[(task_id, version_id)] = ShadowWindow()
            window.checks += requests
            window.rows += rows
            if len(window.algorithm_ms) < self.capacity:
                window.algorithm_ms.append(algorithm_ms)
            if agreement is not None:
                window.agreement, window.floor, window.window_rows = agreement, floor, window_rows
        self._after_record()

    def _after_record(self) -> None:
        if self.background:
            if self._thread is None or not self._thread.is_alive():
                self._start_thread()
        elif time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    # ------------------------------------------------------------------ flush

    def pending(self) -> dict[Key, LatencyWindow]:
        """A copy of the current windows (for tests and the panel)."""
        with self._lock:
            return dict(self._windows)

    def flush(self) -> list[PerformanceSample]:
        """Write the aggregates since the last flush as samples; returns the rows written."""
        with self._flushing:
            now = time.monotonic()
            with self._lock:
                windows, self._windows = self._windows, {}
                shadows, self._shadow = self._shadow, {}
                inputs, self._inputs = self._inputs, {}
                self._last_flush = now
            if inputs:
                self._flush_inputs(inputs)
            if not windows and not shadows:
                return []
            rows = [self._live_row(key, w, now) for key, w in windows.items()]
            rows += [self._shadow_row(key, w) for key, w in shadows.items()]
            rows = _existing_only(rows)
            try:
                return PerformanceSample.objects.bulk_create(rows)
            except Exception:  # noqa: BLE001 - a lost window must not break serving
                logger.exception("tracker: %d live/shadow samples could not be written", len(rows))
                return []

    def _flush_inputs(self, inputs: dict[int, InputReservoir]) -> None:
        """One ``InputSample`` per task; each task keeps its newest ``inputs_keep`` samples."""
        try:
            live_tasks = set(Task.objects.filter(pk__in=list(inputs)).values_list("pk", flat=True))
            rows = [InputSample(task_id=task_id, rows=r.size, seen=r.seen, data=_npy_bytes(r.sample()))
                    for task_id, r in inputs.items() if task_id in live_tasks and r.size]
            InputSample.objects.bulk_create(rows)
            for sample in rows:
                cutoff = (InputSample.objects.filter(task_id=sample.task_id).order_by("-id")
                          .values_list("id", flat=True)[self.inputs_keep:self.inputs_keep + 1])
                if cutoff:
                    InputSample.objects.filter(task_id=sample.task_id, id__lte=cutoff[0]).delete()
        except Exception:  # noqa: BLE001 - a lost input sample must not break serving
            logger.exception("tracker: input samples of %d tasks could not be written", len(inputs))

    @staticmethod
    def _live_row(key: Key, w: LatencyWindow, now: float) -> PerformanceSample:
        task_id, implementation, version_id = key
        p50, p95, p99 = w.percentiles()
        span = max(now - w.started, 1e-3)
        return PerformanceSample(
            task_id=task_id, version_id=version_id, implementation=implementation, source=SampleSource.LIVE,
            latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99, throughput_per_s=w.n / span,
            n_requests=w.n, n_errors=w.errors,
            extra={"rows": w.rows, "window_s": round(span, 3), "latency_mean_ms": w.total_ms / max(1, w.n),
                   "latency_max_ms": w.max_ms, "reservoir": len(w.reservoir), "pid": os.getpid()},
        )

    @staticmethod
    def _shadow_row(key: tuple[int, int], w: ShadowWindow) -> PerformanceSample:
        task_id, version_id = key
        algo = np.asarray(w.algorithm_ms) if w.algorithm_ms else None
        return PerformanceSample(
            task_id=task_id, version_id=version_id, implementation=Implementation.NEURAL,
            source=SampleSource.SHADOW, score=w.agreement, metric="agreement", n_requests=w.checks,
            extra={"rows": w.rows, "floor": w.floor, "window_rows": w.window_rows, "pid": os.getpid(),
                   "algorithm_p50_ms": float(np.percentile(algo, 50)) if algo is not None else None,
                   "algorithm_p95_ms": float(np.percentile(algo, 95)) if algo is not None else None},
        )

    # ------------------------------------------------------------------ background thread

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="serving-tracker", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            finally:
                close_old_connections()

    def stop(self, *, flush: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        if flush:
            self.flush()


def _npy_bytes(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _existing_only(rows: list[PerformanceSample]) -> list[PerformanceSample]:
    """Drop rows of tasks or versions deleted since they were recorded (their FK would fail)."""
    task_ids = {r.task_id for r in rows}
    version_ids = {r.version_id for r in rows if r.version_id is not None}
    live_tasks = set(Task.objects.filter(pk__in=task_ids).values_list("pk", flat=True))
    live_versions = set(ModelVersion.objects.filter(pk__in=version_ids).values_list("pk", flat=True))
    return [r for r in rows if r.task_id in live_tasks and (r.version_id is None or r.version_id in live_versions)]


_tracker: PerformanceTracker | None = None
_tracker_lock = threading.Lock()


def serving_tracker() -> PerformanceTracker:
    """This process's tracker, created on first use from the settings."""
    global _tracker
    tracker = _tracker
    if tracker is None:
        with _tracker_lock:
            if _tracker is None:
                _tracker = PerformanceTracker(
                    enabled=serving_setting("PLASTICITY_SERVING_TRACKER"),
                    flush_s=serving_setting("PLASTICITY_TRACKER_FLUSH_S"),
                    reservoir=serving_setting("PLASTICITY_TRACKER_RESERVOIR"),
                    background=serving_setting("PLASTICITY_SERVING_BACKGROUND"),
                    sample_inputs=serving_setting("PLASTICITY_INPUT_SAMPLING"),
                    input_rows=serving_setting("PLASTICITY_INPUT_SAMPLE_ROWS"),
                    input_bytes=serving_setting("PLASTICITY_INPUT_SAMPLE_BYTES"),
                    inputs_keep=serving_setting("PLASTICITY_INPUT_SAMPLES_KEEP"),
                )
                atexit.register(_flush_at_exit, _tracker)
            tracker = _tracker
    return tracker


def _flush_at_exit(tracker: PerformanceTracker) -> None:
    if tracker.background:
        try:
            tracker.stop(flush=True)
        except Exception:  # noqa: BLE001 - the database may already be gone
            pass


def serving_tracker_reset() -> None:
    global _tracker
    with _tracker_lock:
        if _tracker is not None:
            _tracker.stop()
        _tracker = None
