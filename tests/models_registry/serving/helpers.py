"""Helpers shared by the serving tests."""

from __future__ import annotations

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


def gunicorn_workers(serve) -> list[psutil.Process]:
    """The worker processes of the gunicorn master that ``manage.py serve`` (``serve``) started."""
    children = psutil.Process(serve.pid).children(recursive=True)
    masters = [p for p in children if "gunicorn" in " ".join(p.cmdline()) and p.ppid() == serve.pid]
    return [w for m in masters for w in m.children()]
