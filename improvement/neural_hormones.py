"""Hormone calculations for Plasticity itself, served by the hormone-response task.

The built-in ``hormone-response`` task models the HPA axis: stimulus parameters → peak
cortisol and four other summaries. Plasticity asks that same task how large a cortisol
release a stress event causes, so its own neural surrogate — once serving judges it better
than (or as good and faster than) the simulator — computes the loop's stress hormone.

Which implementation answers
----------------------------
``ImprovementConfig.neural_hormones`` on (the default): whatever the serving router serves for
the task — the neural version when serving says it beats the algorithm, the algorithm
otherwise. Off, or on any error (no such task, a load failure, a wrong shape, non-finite
outputs): ``simulate_hormone_response``, the algorithm itself. Every release records which
one computed it in ``HormoneEvent.context["hormone_model"]``.

From an event to a release (one table)
--------------------------------------
An event has a *severity* s and a *persistence* d, both in [0, 1]. They become a stressor::

    stress_amplitude = 0.25 + 3.75·s        (× basal CRH secretion: the documented range)
    stress_duration  = 0.25 + 3.75·d        (hours)
    everything else nominal: onset 12:00, feedback 1, drive 1, ACTH clearance 4/h,
    cortisol clearance 0.7/h, no circadian rhythm (so the stressor alone sets the peak)

    response = (peak(event) − peak(mildest)) / (peak(severest) − peak(mildest))   clipped to [0, 1]
    release  = MAX_RELEASE[event] × response

where mildest is (s, d) = (0, 0) and severest (1, 1), computed by the same implementation in
the same batch, so a surrogate's scale errors cancel.

====================  ===================================  ==================================  =====
event                 severity s                           persistence d                       max
====================  ===================================  ==================================  =====
run_failed            0.6                                  wall time / run budget (≤ 1)        0.25
latency_over_budget   (p95 / budget − 1) / 3 (≤ 1)         0.5                                 0.1
resource_pressure     (max(cpu %, memory %) − 90) / 10     0.5                                 0.1
====================  ===================================  ==================================  =====
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from hormones.choices import HormoneName
from hormones.models import HormoneEvent
from hormones.services import hormone_release
from improvement.models import ImprovementConfig
from models_registry.data.hormone_model import N_INPUTS, N_OUTPUTS, simulate_hormone_response
from models_registry.serving.router import TaskNotFound, serving_router

logger = logging.getLogger(__name__)

HORMONE_TASK_SLUG = "hormone-response"
PEAK_CORTISOL = 0  # output column of the hormone-response task

AMPLITUDE_RANGE = (0.25, 4.0)
DURATION_RANGE_H = (0.25, 4.0)
# onset (h), feedback, CRH drive, ACTH clearance (1/h), cortisol clearance (1/h), circadian amplitude
NOMINAL = {"stress_onset": 12.0, "feedback_strength": 1.0, "crh_drive": 1.0, "acth_clearance": 4.0,
           "cortisol_clearance": 0.7, "circadian_amplitude": 0.0}

MAX_RELEASE = {"run_failed": 0.25, "latency_over_budget": 0.1, "resource_pressure": 0.1}


@dataclasses.dataclass(frozen=True)
class HormoneComputation:
    """Outputs (N, 5) and which implementation computed them."""

    outputs: np.ndarray
    computed_by: str  # "neural <model> v<n>" | "algorithm (serving)" | "algorithm (...reason...)"
    implementation: str  # "neural" | "algorithmic"
    version_id: int | None = None
    fallback_reason: str = ""

    def as_context(self) -> dict:
        return {"computed_by": self.computed_by, "implementation": self.implementation,
                "version_id": self.version_id, **({"fallback": self.fallback_reason} if self.fallback_reason else {})}


def _algorithm(X: np.ndarray, reason: str) -> HormoneComputation:
    return HormoneComputation(simulate_hormone_response(X), f"algorithm ({reason})", "algorithmic",
                              fallback_reason=reason)


def hormone_response(X: np.ndarray, *, neural: bool | None = None) -> HormoneComputation:
    """The hormone-response task's answer for stimulus rows ``X`` (N, 8), by the implementation chosen above.

    ``neural`` None reads ``ImprovementConfig.neural_hormones``.
    """
    X = np.asarray(X, dtype=np.float32).reshape(-1, N_INPUTS)
    if neural is None:
        neural = ImprovementConfig.load().neural_hormones
    if not neural:
        return _algorithm(X, "neural_hormones is off")
    try:
        route = serving_router().route(HORMONE_TASK_SLUG)
    except TaskNotFound:  # an optional task: a deployment may run without it; nothing is wrong
        return _algorithm(X, f"no {HORMONE_TASK_SLUG} task")
    except Exception as exc:  # noqa: BLE001 - the loop's hormones must never depend on serving working
        logger.warning("hormone-response serving failed; the algorithm computes the release", exc_info=True)
        return _algorithm(X, f"fallback: {type(exc).__name__}: {exc}"[:200])
    try:
        outputs = np.asarray(route.predict(X), dtype=np.float64).reshape(len(X), -1)
        if outputs.shape[1] != N_OUTPUTS or not np.isfinite(outputs).all():
            raise ValueError(f"served outputs of shape {outputs.shape} are not {N_OUTPUTS} finite values per row")
    except Exception as exc:  # noqa: BLE001 - the loop's hormones must never depend on serving working
        logger.warning("hormone-response serving failed; the algorithm computes the release", exc_info=True)
        return _algorithm(X, f"fallback: {type(exc).__name__}: {exc}"[:200])
    if route.version is not None and route.implementation == "neural":
        return HormoneComputation(outputs, f"neural {route.version.model.name} v{route.version.number}", "neural",
                                  version_id=route.version.pk)
    return HormoneComputation(outputs, "algorithm (serving)", "algorithmic")


def stress_stimulus(*, severity: float, persistence: float) -> dict[str, float]:
    """The stressor an event of this severity and persistence stands for (see the module table)."""
    s = min(1.0, max(0.0, float(severity)))
    d = min(1.0, max(0.0, float(persistence)))
    return {
        "stress_amplitude": AMPLITUDE_RANGE[0] + (AMPLITUDE_RANGE[1] - AMPLITUDE_RANGE[0]) * s,
        "stress_duration": DURATION_RANGE_H[0] + (DURATION_RANGE_H[1] - DURATION_RANGE_H[0]) * d,
        **NOMINAL,
    }


def _row(stimulus: dict[str, float]) -> list[float]:
    return [stimulus["stress_amplitude"], stimulus["stress_onset"], stimulus["stress_duration"],
            stimulus["feedback_strength"], stimulus["crh_drive"], stimulus["acth_clearance"],
            stimulus["cortisol_clearance"], stimulus["circadian_amplitude"]]


def stress_response(*, severity: float, persistence: float,
                    neural: bool | None = None) -> tuple[float, HormoneComputation, dict]:
    """(response in [0, 1], the computation, the stimulus): the normalised peak-cortisol response."""
    stimulus = stress_stimulus(severity=severity, persistence=persistence)
    X = np.array([_row(stimulus), _row(stress_stimulus(severity=0, persistence=0)),
                  _row(stress_stimulus(severity=1, persistence=1))], dtype=np.float32)
    computation = hormone_response(X, neural=neural)
    peak, low, high = (float(v) for v in computation.outputs[:, PEAK_CORTISOL])
    if not high - low > 1e-6 and computation.implementation == "neural":
        # A surrogate that cannot tell the mildest from the severest stressor says nothing.
        computation = _algorithm(X, "fallback: the served model's response range is empty")
        peak, low, high = (float(v) for v in computation.outputs[:, PEAK_CORTISOL])
    response = min(1.0, max(0.0, (peak - low) / (high - low))) if high - low > 1e-6 else 0.0
    return response, computation, stimulus


def stress_release(*, event: str, severity: float, persistence: float, cause: str,
                   context: dict | None = None) -> HormoneEvent:
    """Release cortisol for a stress event, sized by the hormone-response model (the one service for this)."""
    if event not in MAX_RELEASE:
        raise ValueError(f"unknown stress event {event!r}; expected one of {', '.join(MAX_RELEASE)}")
    response, computation, stimulus = stress_response(severity=severity, persistence=persistence)
    delta = MAX_RELEASE[event] * response
    model = {**computation.as_context(), "event": event, "severity": round(float(severity), 4),
             "persistence": round(float(persistence), 4), "stimulus": {k: round(v, 4) for k, v in stimulus.items()},
             "response": round(response, 4)}
    return hormone_release(name=HormoneName.CORTISOL, delta=delta, cause=cause,
                           context={**(context or {}), "hormone_model": model})


__all__ = ["HormoneComputation", "hormone_response", "stress_release",
           "stress_response", "stress_stimulus"]
