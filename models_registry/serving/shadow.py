"""Shadow checks: a fraction of live neural requests also runs on the algorithm, off the request path.

``ShadowChecker.submit`` (called after the response's outputs are ready) samples requests
with the task's ``ServingState.shadow_fraction`` and puts them on a small bounded queue; a
full queue drops the check rather than slow anyone down. Worker threads run the algorithm
on the same inputs and keep, per task, a window of the last ``PLASTICITY_SHADOW_WINDOW``
rows of (neural, algorithmic) outputs. Agreement over the window is measured like a score,
with the algorithm's outputs as the truth: label agreement for classes, R² (clipped to
[0, 1]) for values and reconstructions.

The agreement floor is the lowest agreement consistent with both implementations keeping
their held-out scores, minus the tolerance: ``score_n + score_a − 1 − tolerance`` (if each is
right on its held-out fraction, they agree at least on the overlap). Falling below it over
a window of at least ``PLASTICITY_SHADOW_MIN_ROWS`` rows (for classes: even the Wilson upper
bound of the agreement, so a few disagreements in a small window are not mistaken for
drift) means live traffic has drifted from what the neural version was judged on, and
``shadow_drift_record``:

* raises adrenaline (``hormone_release(name="adrenaline", ...)``);
* switches serving back to the algorithm at once (reason ``shadow_disagreement``), unless
  an operator pinned the task;
* publishes ``serving.drift`` (task, version, agreement, floor, rows, switched) so the
  improvement loop can queue retraining.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import close_old_connections, transaction

from events.payloads import ServingDriftPayload
from events.publisher import publish
from hormones.choices import HormoneName
from hormones.services import hormone_release
from models_registry.choices import Implementation, OutputKind
from models_registry.implementations import algorithm_predict_fn
from models_registry.models import ModelVersion, Task
from models_registry.nn.evaluation import score_predictions
from models_registry.selectors import algorithm_latest_sample, version_latest_sample
from models_registry.serving.choices import SwitchReason
from models_registry.serving.conf import serving_setting
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.router import Route, outputs_finalise
from models_registry.serving.switching import ALGORITHMIC, NEURAL, serving_switch
from models_registry.serving.tracker import serving_tracker

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ agreement


class AgreementWindow:
    """The last ``capacity`` rows of (neural, algorithmic) outputs of one neural version."""

    def __init__(self, *, version_id: int, capacity: int) -> None:
        self.version_id = version_id
        self.neural: deque[np.ndarray] = deque(maxlen=capacity)
        self.expected: deque[np.ndarray] = deque(maxlen=capacity)

    def add(self, neural: np.ndarray, expected: np.ndarray) -> None:
        for n_row, e_row in zip(neural, expected, strict=True):
            self.neural.append(np.asarray(n_row))
            self.expected.append(np.asarray(e_row))

    @property
    def rows(self) -> int:
        return len(self.neural)

    def agreement(self, output_kind: str) -> float:
        return agreement_score(output_kind, np.stack(list(self.neural)), np.stack(list(self.expected)))

    def clear(self) -> None:
        self.neural.clear()
        self.expected.clear()


def agreement_score(output_kind: str, neural: np.ndarray, expected: np.ndarray) -> float:
    """Agreement in [0, 1]: the neural outputs scored with the algorithm's as the truth."""
    if output_kind == OutputKind.CLASSES:
        return float(np.mean(neural.reshape(-1) == expected.reshape(-1)))
    return score_predictions(output_kind, expected, neural)


def agreement_upper_bound(agreement: float, rows: int, *, z: float = 2.0) -> float:
    """Wilson upper bound of a label agreement measured on ``rows`` rows (z = 2: about 98 % one-sided).

    A handful of disagreements in a small window is noise, not drift: classes drift only
    when even this bound is below the floor.
    """
    if rows <= 0:
        return 1.0
    n, p = float(rows), agreement
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z * z / n))


def shadow_drifted(output_kind: str, agreement: float, rows: int, floor: float) -> bool:
    """Whether ``agreement`` over ``rows`` rows is below ``floor`` beyond sampling noise (classes)."""
    if output_kind == OutputKind.CLASSES:
        return agreement_upper_bound(agreement, rows) < floor
    return agreement < floor


def shadow_agreement_floor(*, task: Task, version: ModelVersion) -> float:
    """``score_n + score_a − 1 − tolerance`` from held-out samples (a setting when one is missing)."""
    state = ServingState.objects.filter(task=task).first()
    tolerance = state.effective_tolerance() if state is not None else task.score_tolerance
    algo = algorithm_latest_sample(task=task)
    neural = version_latest_sample(version=version)
    neural_score = neural.score if neural is not None and neural.score is not None else version.score
    if algo is None or algo.score is None or neural_score is None:
        return serving_setting("PLASTICITY_SHADOW_MIN_AGREEMENT")
    return float(min(1.0, max(0.0, neural_score + algo.score - 1.0 - tolerance)))


# ------------------------------------------------------------------------------ the drift service


def shadow_drift_record(*, task: Task, version: ModelVersion | None, agreement: float, floor: float,
                        rows: int) -> ServingSwitch | None:
    """Announce live disagreement: adrenaline, a switch back to the algorithm, a ``serving.drift`` event."""
    evidence: dict[str, Any] = {"agreement": round(agreement, 6), "floor": round(floor, 6), "rows": rows,
                "version_id": version.pk if version is not None else None,
                "version": version.number if version is not None else None}
    detail = f"shadow agreement {agreement:.4f} < floor {floor:.4f} over the last {rows} rows"
    switch = None
    with transaction.atomic():
        hormone_release(name=HormoneName.ADRENALINE, delta=serving_setting("PLASTICITY_SHADOW_ADRENALINE"),
                        cause=f"{task.slug}: {detail}", context={"task": task.slug, **evidence})
        state = ServingState.objects.select_for_update().filter(task=task).first()
        if state is not None and state.implementation == NEURAL and not state.pinned and task.algorithm_path:
            switch = serving_switch(task=task, implementation=ALGORITHMIC, reason=SwitchReason.SHADOW_DISAGREEMENT,
                                    detail=detail, evidence=evidence)
        publish("serving.drift", ServingDriftPayload(
            task=task.slug, task_id=task.pk, agreement=evidence["agreement"], floor=evidence["floor"], rows=rows,
            version_id=evidence["version_id"], version=evidence["version"], switched=switch is not None,
            switch_id=switch.pk if switch else None,
        ))
    logger.warning("serving %s: %s%s", task.slug, detail, "; switched to the algorithm" if switch else "")
    return switch


# ------------------------------------------------------------------------------ the checker


@dataclass(frozen=True)
class _Job:
    route: Route
    X: np.ndarray
    outputs: np.ndarray


@dataclass(frozen=True)
class ShadowVerdict:
    rows: int
    agreement: float | None
    floor: float | None
    drifted: bool


class ShadowChecker:
    """Samples live neural requests and checks them against the algorithm on worker threads."""

    FLOOR_TTL_S = 5.0
    BATCH_JOBS = 256  # queued checks run as one algorithm call at most

    def __init__(self, *, workers: int = 1, queue_size: int = 64, window_rows: int = 256, min_rows: int = 32,
                 cooldown_s: float = 60.0, seed: int | None = None, max_rows_per_s: float = 0.0,
                 batch_s: float = 0.0) -> None:
        self.workers = max(1, workers)
        # How long a worker gathers checks after the first before it runs them (0: only those queued).
        self.batch_s = max(0.0, float(batch_s))
        # A budget of checked rows per second (a token bucket holding one second's worth; 0: none).
        # The window holds a few hundred rows: at a few thousand requests per second a fraction
        # alone would spend a large share of the CPU refreshing it many times a second.
        self.max_rows_per_s = max(0.0, float(max_rows_per_s))
        self._tokens = self.max_rows_per_s
        self._tokens_at = time.monotonic()
        self.over_budget = 0
        self.window_rows = max(1, window_rows)
        self.min_rows = max(1, min_rows)
        self.cooldown_s = cooldown_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, queue_size))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._windows: dict[int, AgreementWindow] = {}
        self._floors: dict[tuple[int, int], tuple[float, float]] = {}
        self._last_alarm: dict[int, float] = {}
        self._threads: list[threading.Thread] = []
        self.submitted = 0
        self.dropped = 0

    # ------------------------------------------------------------------ request path

    def submit(self, route: Route, X: np.ndarray, outputs: np.ndarray) -> bool:
        """Maybe queue a check of this request (never blocks; False when not sampled or dropped)."""
        fraction = route.shadow_fraction
        if fraction <= 0.0 or route.implementation != Implementation.NEURAL or not route.task.algorithm_path:
            return False
        if fraction < 1.0 and self._rng.random() >= fraction:
            return False
        if self.max_rows_per_s:
            # Races between request threads only blur the budget a little; no lock on the hot path.
            now = time.monotonic()
            self._tokens = min(self.max_rows_per_s, self._tokens + (now - self._tokens_at) * self.max_rows_per_s)
            self._tokens_at = now
            allowed = int(self._tokens)
            if allowed < 1:
                self.over_budget += 1
                return False
            if len(X) > allowed:  # a batch: check a random subset of its rows
                keep = np.sort(np.asarray(self._rng.sample(range(len(X)), allowed)))
                X, outputs = X[keep], outputs[keep]
            self._tokens -= len(X)
        if len(self._threads) < self.workers:
            self._start_workers()
        try:
            self._queue.put_nowait(_Job(route, X, outputs))
        except queue.Full:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    # ------------------------------------------------------------------ workers

    def _start_workers(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"serving-shadow-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            jobs: list[_Job] = []
            stop = False
            item = self._queue.get()
            # Gather the checks sampled in the next ``batch_s`` seconds (and any already queued),
            # then run the algorithm once per task and version: one call over many rows costs
            # about what one row does, so the checks take a small, steady share of the process.
            gather_until = time.monotonic() + self.batch_s
            while True:
                if item is None:  # stop()
                    stop = True
                else:
                    jobs.append(item)
                if stop or len(jobs) >= self.BATCH_JOBS:
                    break
                wait = gather_until - time.monotonic()
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            groups: dict[tuple[int, int | None], list[_Job]] = {}
            for job in jobs:
                version = job.route.version
                groups.setdefault((job.route.task.pk, version.pk if version else None), []).append(job)
            for group in groups.values():
                try:
                    self.check(group[-1].route, np.concatenate([job.X for job in group]),
                               np.concatenate([job.outputs for job in group]), requests=len(group))
                except Exception:  # noqa: BLE001 - a failed check must not kill the worker
                    logger.exception("shadow check of %s failed", group[-1].route.task.slug)
            for _ in range(len(jobs) + int(stop)):
                self._queue.task_done()
            close_old_connections()
            if stop:
                return

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued check is done (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued checks, then end the workers."""
        self.drain(timeout)
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        for thread in threads:
            thread.join(timeout=timeout)

    # ------------------------------------------------------------------ one check

    def check(self, route: Route, X: np.ndarray, outputs: np.ndarray, *, requests: int = 1) -> ShadowVerdict:
        """Run the algorithm on ``X`` (the rows of ``requests`` sampled requests), fold the
        agreement into the window, act on drift."""
        task, version = route.task, route.version
        if version is None:  # submit() queues neural routes only
            raise ValueError(f"{task.slug}: a shadow check needs a neural route with a version")
        t0 = time.perf_counter()
        expected = outputs_finalise(task, algorithm_predict_fn(task)(X))
        algorithm_ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            window = self._windows.get(task.pk)
            if window is None or window.version_id != version.pk:
                window = self._windows[task.pk] = AgreementWindow(version_id=version.pk, capacity=self.window_rows)
            window.add(outputs, expected)
            rows = window.rows
            agreement = window.agreement(task.output_kind) if rows >= self.min_rows else None
        floor = self._floor(task, version) if agreement is not None else None
        serving_tracker().record_shadow(task_id=task.pk, version_id=version.pk, rows=len(X), requests=requests,
                                        algorithm_ms=algorithm_ms, agreement=agreement, floor=floor, window_rows=rows)
        drifted = (agreement is not None and floor is not None
                   and shadow_drifted(task.output_kind, agreement, rows, floor))
        if drifted and agreement is not None and floor is not None:  # drifted implies both; narrowed for mypy
            now = time.monotonic()
            with self._lock:
                if now - self._last_alarm.get(task.pk, -float("inf")) < self.cooldown_s:
                    return ShadowVerdict(rows, agreement, floor, False)
                self._last_alarm[task.pk] = now
                window.clear()
            shadow_drift_record(task=task, version=version, agreement=agreement, floor=floor, rows=rows)
        return ShadowVerdict(rows, agreement, floor, drifted)

    def _floor(self, task: Task, version: ModelVersion) -> float:
        key = (task.pk, version.pk)
        cached = self._floors.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.FLOOR_TTL_S:
            return cached[0]
        floor = shadow_agreement_floor(task=task, version=version)
        self._floors[key] = (floor, now)
        return floor


_shadow: ShadowChecker | None = None
_shadow_lock = threading.Lock()


def serving_shadow() -> ShadowChecker:
    """This process's shadow checker, created on first use from the settings."""
    global _shadow
    checker = _shadow
    if checker is None:
        with _shadow_lock:
            if _shadow is None:
                _shadow = ShadowChecker(
                    workers=serving_setting("PLASTICITY_SHADOW_WORKERS"),
                    queue_size=serving_setting("PLASTICITY_SHADOW_QUEUE"),
                    window_rows=serving_setting("PLASTICITY_SHADOW_WINDOW"),
                    min_rows=serving_setting("PLASTICITY_SHADOW_MIN_ROWS"),
                    cooldown_s=serving_setting("PLASTICITY_SHADOW_COOLDOWN_S"),
                    max_rows_per_s=serving_setting("PLASTICITY_SHADOW_MAX_ROWS_PER_S"),
                    batch_s=serving_setting("PLASTICITY_SHADOW_BATCH_S"),
                )
            checker = _shadow
    return checker


def serving_shadow_reset() -> None:
    """Stop and forget this process's checker (tests; settings changes)."""
    global _shadow
    with _shadow_lock:
        if _shadow is not None:
            _shadow.stop()
        _shadow = None
