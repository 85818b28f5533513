"""Helpers shared by the serving tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import psutil

from models_registry.choices import Implementation, SampleSource
from models_registry.models import ModelVersion, PerformanceSample, Task


def sample(task: Task, *, version: ModelVersion | None = None, score: float, p50: float | None = None,
           p95: float | None = None) -> PerformanceSample:
    """A hand-built held-out evaluation sample (what serving decisions read)."""
    return PerformanceSample.objects.create(
        task=task, version=version, source=SampleSource.EVALUATION, split="gate", score=score, metric="accuracy",
        implementation=Implementation.NEURAL if version is not None else Implementation.ALGORITHMIC,
        latency_p50_ms=p50, latency_p95_ms=p95 if p95 is not None else p50,
    )


def blobs_inputs(n: int = 8, seed: int = 0) -> list:
    return np.random.default_rng(seed).normal(0, 3, size=(n, 4)).round(4).tolist()


def wait_for(condition: Callable[[], object], *, timeout_s: float, what: str, interval_s: float = 0.2,
             detail: Callable[[], object] = lambda: ""):
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s {detail()}"
        time.sleep(interval_s)


def gunicorn_workers(serve) -> list[psutil.Process]:
    """The worker processes of the gunicorn master that ``manage.py serve`` (``serve``) started."""
    children = psutil.Process(serve.pid).children(recursive=True)
    masters = [p for p in children if "gunicorn" in " ".join(p.cmdline()) and p.ppid() == serve.pid]
    return [w for m in masters for w in m.children()]
