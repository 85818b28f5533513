"""One prediction: run the task's route, time it, fold it (and a sample of its rows) into the tracker,
maybe shadow it; its id.

No database access and no file read: the route comes from the router's table, the
tracker aggregates in memory and the shadow check is queued for a worker thread. If the
neural implementation raises or produces NaN/infinity, the error is counted and the
algorithm answers instead (when the task has one). ``Prediction.prediction_id`` signs what was
predicted into the id a client quotes with its feedback (``serving.prediction_ids``): no write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from models_registry.choices import Implementation, OutputKind
from models_registry.serving.conf import serving_setting
from models_registry.serving.prediction_ids import KIND_VALUES_F32, classes_kind, prediction_id_issue
from models_registry.serving.router import Route, algorithm_route, serving_router_reset
from models_registry.serving.shadow import serving_shadow, serving_shadow_reset
from models_registry.serving.tracker import serving_tracker, serving_tracker_reset

logger = logging.getLogger(__name__)


class PredictionFailed(RuntimeError):
    """The serving implementation failed on valid inputs and nothing could stand in."""


@dataclass(frozen=True)
class Prediction:
    route: Route
    outputs: np.ndarray
    latency_ms: float

    @property
    def batch_size(self) -> int:
        return int(self.outputs.shape[0])

    def prediction_id(self) -> str | None:
        """The signed id of this answer (one for the batch; feedback names rows by index).

        None for reconstruction tasks and for batches of more than
        ``PLASTICITY_PREDICTION_ID_MAX_VALUES`` output values.
        """
        task = self.route.task
        if task.output_kind == OutputKind.CLASSES:
            kind = classes_kind(task.n_outputs)
        elif task.output_kind == OutputKind.VALUES:
            kind = KIND_VALUES_F32
        else:
            return None
        return prediction_id_issue(task_id=task.pk, version_id=self.route.version_id, kind=kind, outputs=self.outputs,
                                   limit=serving_setting("PLASTICITY_PREDICTION_ID_MAX_VALUES"))

    def answer(self) -> dict:
        """The predict endpoint's answer: which implementation and version, outputs, labels, the id."""
        task, version, outputs = self.route.task, self.route.version, self.outputs
        labels = None
        if task.output_kind == OutputKind.CLASSES and task.class_labels:
            names = task.class_labels
            labels = [names[i] if 0 <= i < len(names) else str(i) for i in outputs.tolist()]
        return {
            "task": task.slug, "implementation": self.route.implementation,
            "version": version.number if version is not None else None,
            "version_id": version.pk if version is not None else None,
            "runtime": version.runtime if version is not None else None,
            "outputs": outputs.tolist(), "labels": labels, "batch_size": self.batch_size,
            "prediction_id": self.prediction_id(),
        }


def serving_predict(*, route: Route, X: np.ndarray) -> Prediction:
    """Outputs of ``route`` for the validated batch ``X`` (float32, (N, *input_shape))."""
    tracker = serving_tracker()
    rows = int(X.shape[0])
    t0 = time.perf_counter()
    try:
        outputs = route.predict(X)
    except Exception as exc:
        latency_ms = (time.perf_counter() - t0) * 1000.0
        tracker.record(task_id=route.task.pk, implementation=route.implementation, version_id=route.version_id,
                       latency_ms=latency_ms, rows=rows, error=True)
        if route.implementation != Implementation.NEURAL or not route.task.algorithm_path:
            raise PredictionFailed(f"{route.task.slug}: {route.implementation} failed: {exc}") from exc
        logger.exception("serving %s: neural v%s failed; the algorithm answers", route.task.slug,
                         route.version.number if route.version else "?")
        return serving_predict(route=algorithm_route(route.task), X=X)
    latency_ms = (time.perf_counter() - t0) * 1000.0
    tracker.record(task_id=route.task.pk, implementation=route.implementation, version_id=route.version_id,
                   latency_ms=latency_ms, rows=rows)
    tracker.record_inputs(task_id=route.task.pk, X=X)
    if route.shadow_fraction > 0.0:
        serving_shadow().submit(route, X, outputs)
    return Prediction(route=route, outputs=outputs, latency_ms=latency_ms)


def serving_runtime_reset() -> None:
    """Stop and forget this process's router, tracker and shadow checker (tests; settings changes)."""
    serving_shadow_reset()
    serving_tracker_reset()
    serving_router_reset()
