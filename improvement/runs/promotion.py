"""Promotion: the decision (pure) and the one service that promotes.

Gain, by the strategy's objective:

* ``score``   — relative reduction of error: ``(err_base − err_cand) / err_base`` with
  ``err = 1 − score`` (0.90 → 0.93 is a 30 % gain; a perfect baseline leaves no gain).
* ``latency`` — relative reduction of latency, as the geometric mean of the p50 speed-ups
  at batch 1 and batch 256: ``1 − sqrt(c1/b1 · c256/b256)``.
* ``size``    — relative reduction of bytes.

A candidate is promoted only when ``gain ≥ performance_threshold`` and the guard rails
hold: a latency/size optimization may lose at most ``score_tolerance`` of absolute score;
a score improvement must stay within the task's latency budget (p95 at batch 1), unless the
baseline was already over it and the candidate is no slower.
"""

from __future__ import annotations

import dataclasses
import math

from django.db import transaction

from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_mark_promoted
from models_registry.models import ModelVersion
from models_registry.nn.evaluation import EvaluationResult
from models_registry.services import version_create, version_discard


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    gain: float
    reason: str


def _error(score: float) -> float:
    return max(0.0, 1.0 - score)


def score_gain(baseline: float, candidate: float) -> float:
    base_err = _error(baseline)
    if base_err <= 1e-12:
        return 0.0
    return (base_err - _error(candidate)) / base_err


def latency_gain(baseline: dict, candidate: dict) -> float:
    ratios = []
    for key in ("p50_ms_b1", "p50_ms_b256"):
        b, c = baseline.get(key), candidate.get(key)
        if b and c and b > 0:
            ratios.append(c / b)
    if not ratios:
        return 0.0
    return 1.0 - math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def size_gain(baseline: int | None, candidate: int | None) -> float:
    if not baseline or candidate is None:
        return 0.0
    return (baseline - candidate) / baseline


def decide(
    *, objective: str, baseline: EvaluationResult, candidate: EvaluationResult, threshold: float,
    score_tolerance: float, latency_budget_ms: float,
) -> Decision:
    if objective == "score":
        gain = score_gain(baseline.score, candidate.score)
    elif objective == "latency":
        gain = latency_gain(baseline.latency, candidate.latency)
    elif objective == "size":
        gain = size_gain(baseline.size_bytes, candidate.size_bytes)
    else:
        raise ValueError(f"unknown objective {objective!r}")
    numbers = (f"score {baseline.score:.4f} → {candidate.score:.4f}, "
               f"p95@1 {baseline.latency.get('p95_ms_b1', float('nan')):.3f} → "
               f"{candidate.latency.get('p95_ms_b1', float('nan')):.3f} ms, {objective} gain {gain:+.1%}")
    if objective in ("latency", "size") and candidate.score < baseline.score - score_tolerance:
        return Decision(False, gain, f"rejected: score loss {baseline.score - candidate.score:.4f} exceeds "
                                     f"tolerance {score_tolerance:.4f} ({numbers})")
    if objective == "score":
        cand_p95 = candidate.latency.get("p95_ms_b1")
        base_p95 = baseline.latency.get("p95_ms_b1")
        if cand_p95 is not None and cand_p95 > latency_budget_ms and (base_p95 is None or cand_p95 > base_p95):
            return Decision(False, gain, f"rejected: p95 {cand_p95:.1f} ms exceeds the {latency_budget_ms:g} ms "
                                         f"budget ({numbers})")
    if gain < threshold:
        return Decision(False, gain, f"rejected: gain {gain:+.1%} below the {threshold:.0%} threshold ({numbers})")
    return Decision(True, gain, f"promoted: {numbers}")


def version_promote(
    *, run: ImprovementRun, genome: dict, state_dict: dict, evaluation: EvaluationResult, runtime: str,
    onnx_bytes: bytes | None, decision: Decision, parent: ModelVersion | None, backup: bool = True,
) -> ModelVersion:
    """Write the candidate as a new version, activate it and finish the run — all or nothing.

    Weights go to storage first (inside ``version_create``); the version row, the active
    switch, the run's final state and their live events commit together. With ``backup``
    off (``model_backup_enabled``), the previous version is not kept as a fallback: it is
    deleted in the same transaction (read fresh, now inactive) and its files after commit.
    """
    with transaction.atomic():
        version = version_create(
            model=run.model, genome=genome, state_dict=state_dict, evaluation=evaluation, runtime=runtime,
            onnx_bytes=onnx_bytes, parent=parent, activate=True,
            note=f"run #{run.pk} {run.strategy}", reason=f"run #{run.pk} {run.strategy}: {decision.reason}"[:200],
        )
        if not run_mark_promoted(run_id=run.pk, version=version, gain=decision.gain, decision=decision.reason,
                                 candidate_metrics=evaluation.as_dict()):
            # The run was cancelled or taken over meanwhile: nothing of this promotion may stay.
            raise RunNoLongerRunning(f"run #{run.pk} is no longer running; promotion abandoned")
        if not backup and parent is not None:
            previous = ModelVersion.objects.filter(pk=parent.pk).first()
            if previous is not None and not previous.is_active:
                version_discard(version=previous)
    return version


class RunNoLongerRunning(RuntimeError):
    """The run left the running state (cancelled, reconciled) while its worker was busy."""
