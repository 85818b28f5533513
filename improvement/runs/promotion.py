"""Promotion: the decision (pure) and the one service that promotes.

Every decision is made on the task's **gate** split — never on the sealed test split — with
the task's metric, comparing the candidate with the active version *measured now, the same way*.

Gain, by the strategy's objective:

* ``score``   — relative reduction of error: ``(err_base − err_cand) / err_base`` with
  ``err = 1 − score`` (0.90 → 0.93 is a 30 % gain).
* ``latency`` — relative reduction of latency: one minus the ratio candidate / baseline of the
  median timed repeats, geometric mean over batch 1 and batch 256.
* ``size``    — relative reduction of bytes.

A candidate is promoted only when its gain reaches ``performance_threshold`` **and** a paired
test on the gate rows rejects "no improvement" at ``promotion_alpha`` (one-sided):

* score — McNemar's exact test for accuracy, a paired bootstrap for every other metric
  (``models_registry.nn.significance``);
* latency — a bootstrap of the timing ratio over the repeated timings.

Ties do not lock a model in: a score candidate whose score is held (within ``score_tolerance``
and not significantly worse) is promoted when it is significantly faster, or smaller, by the
threshold — so even a model at a perfect score can be replaced by a faster equal one.

Guard rails: a latency/size optimization may lose at most ``score_tolerance`` of score and must
not be significantly worse. The tolerance is measured from the lineage's reference score
(``reference_score``: the best gate score since the last promotion that gained score), not only
from the baseline, so a chain of "score held" promotions cannot each give up the tolerance and
drift down together; a score improvement must stay within the task's latency budget (p95
at batch 1), unless the baseline was already over it and the candidate is no slower. The
decision's text shows the gain, the p-value or interval and the number of gate rows.

Retraining without forgetting (``rehearsal_judge``): when the task gained rows since the active
version was trained (appends, after growth or drift) and enough of them are gate rows, a score
run — which trains on the whole training split, old and new rows together (rehearsal) — is also
judged on the old and the new gate rows apart. A promotion stands only if the candidate is not
worse than the baseline on the new rows and does not forget the old ones: a loss there of more
than ``forgetting_tolerance`` that the paired test confirms (worse at ``promotion_alpha``) refuses
it — a row or two lost among a few dozen old gate rows is noise, not forgetting. The reason names
both scores, and both go into the evidence.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from django.db import transaction

from improvement.formatting import signed_percent
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_mark_promoted
from models_registry.models import ModelVersion
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.metrics import Predictions
from models_registry.nn.significance import (
    PairedComparison,
    TimingComparison,
    compare_paired,
    timing_comparison,
)
from models_registry.services import version_create, version_discard


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    gain: float
    reason: str
    evidence: dict = dataclasses.field(default_factory=dict)


def _error(score: float) -> float:
    return max(0.0, 1.0 - score)


def score_gain(baseline: float, candidate: float) -> float:
    base_err = _error(baseline)
    if base_err <= 1e-12:
        return 0.0
    return (base_err - _error(candidate)) / base_err


def latency_gain(baseline: dict, candidate: dict) -> float:
    """From percentiles alone (no repeated timings): 1 − geometric mean of the p50 ratios."""
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


def _ms(latency: dict, key: str = "p95_ms_b1") -> str:
    value = latency.get(key)
    return "?" if value is None else f"{value:.3f}"


def _score_text(metric: str, baseline: EvaluationResult, candidate: EvaluationResult, n: int) -> str:
    return f"{metric} {baseline.score:.4f} → {candidate.score:.4f} on {n} gate rows"


def _paired_text(cmp: PairedComparison) -> str:
    if cmp.test == "mcnemar":
        return f"McNemar p={cmp.p_better:.3g} (b={cmp.detail['b']}, c={cmp.detail['c']})"
    lo, hi = cmp.ci95
    return f"bootstrap p={cmp.p_better:.3g}, Δ 95% CI [{lo:+.4f}, {hi:+.4f}]"


def _timing_text(tc: TimingComparison) -> str:
    lo, hi = tc.ci95
    return (f"gain {signed_percent(tc.gain)} latency (ratio {tc.ratio:.3f}, 95% CI {lo:.3f}–{hi:.3f}, "
            f"p={tc.p_faster:.3g}, "
            f"{min(n for n, _ in tc.repeats.values())}+ repeats)")


def _timing(baseline: EvaluationResult, candidate: EvaluationResult) -> TimingComparison | None:
    return timing_comparison(baseline.timings, candidate.timings) if baseline.timings and candidate.timings else None


# Rules that promote a candidate whose score was only held, not improved: the lineage keeps its
# reference score across them (``reference_after``).
HELD_RULES = frozenset({"tie_faster", "tie_smaller", "latency", "size"})


def _held(cmp: PairedComparison, floor: float, alpha: float) -> bool:
    """The candidate's score is held: at or above ``floor`` and not significantly worse."""
    return cmp.candidate_score >= floor and cmp.p_worse > alpha


def reference_after(decision: Decision, candidate_score: float) -> float:
    """The reference score of the version a promotion makes: kept through held promotions,
    reset to the version's own score by one that gained score."""
    if decision.evidence.get("rule") in HELD_RULES and decision.evidence.get("score_reference") is not None:
        return max(float(decision.evidence["score_reference"]), candidate_score)
    return candidate_score


def decide(
    *, objective: str, baseline: EvaluationResult, candidate: EvaluationResult, y_gate: np.ndarray,
    threshold: float, alpha: float, score_tolerance: float, latency_budget_ms: float,
    reference_score: float | None = None,
) -> Decision:
    """Promote or reject, on the gate split, with a paired test (see the module docstring). Pure.

    ``reference_score`` is the baseline lineage's reference (``reference_after``); a held score
    may be at most ``score_tolerance`` below it as well as below the baseline's.
    """
    if objective not in ("score", "latency", "size"):
        raise ValueError(f"unknown objective {objective!r}")
    if baseline.predictions is None or candidate.predictions is None:
        raise ValueError("the gate needs each row's predictions of both implementations")
    n = len(y_gate)
    metric = candidate.metric
    cmp = compare_paired(metric, y_gate, baseline.predictions, candidate.predictions)
    tc = _timing(baseline, candidate)
    reference = max(baseline.score, reference_score) if reference_score is not None else baseline.score
    floor = reference - score_tolerance
    evidence: dict = {"objective": objective, "split": "gate", "n_gate": n, "alpha": alpha, "threshold": threshold,
                      "paired": cmp.as_dict(), "timing": tc.as_dict() if tc else None, "score_reference": reference}
    scores = _score_text(metric, baseline, candidate, n)
    if reference > baseline.score:
        scores += f", lineage reference {reference:.4f}"

    def verdict(promote: bool, gain: float, text: str, rule: str) -> Decision:
        return Decision(promote, gain, text, {**evidence, "gain": gain, "rule": rule})

    if objective == "score":
        gain = score_gain(baseline.score, candidate.score)
        cand_p95, base_p95 = candidate.latency.get("p95_ms_b1"), baseline.latency.get("p95_ms_b1")
        if cand_p95 is not None and cand_p95 > latency_budget_ms and (base_p95 is None or cand_p95 > base_p95):
            return verdict(False, gain, f"rejected: p95 {cand_p95:.1f} ms exceeds the {latency_budget_ms:g} ms "
                                        f"budget ({scores})", "latency_budget")
        if gain >= threshold and cmp.p_better <= alpha:
            return verdict(True, gain, f"promoted: gain {signed_percent(gain)} less error (≥ {threshold:.0%}), "
                                       f"{_paired_text(cmp)} ≤ α {alpha:g}; {scores}", "score")
        if _held(cmp, floor, alpha):
            # An equal score (a model already at the top included) can still win on cost.
            if tc is not None and tc.gain > 0 and tc.gain >= threshold and tc.p_faster <= alpha:
                return verdict(True, tc.gain, f"promoted: score held ({scores}), {_timing_text(tc)}", "tie_faster")
            size = size_gain(baseline.size_bytes, candidate.size_bytes)
            if size > 0 and size >= threshold:
                return verdict(True, size, f"promoted: score held ({scores}), gain {signed_percent(size)} smaller",
                               "tie_smaller")
        if gain < threshold:
            why = f"gain {signed_percent(gain)} less error, short of the {threshold:.0%} threshold ({_paired_text(cmp)})"
        else:
            why = f"gain {signed_percent(gain)} less error, not significant: {_paired_text(cmp)} > α {alpha:g}"
        return verdict(False, gain, f"rejected: {why}; {scores}", "score")

    held = f"score held ({scores}, {_paired_text(cmp)})"
    if not _held(cmp, floor, alpha):
        return verdict(False, 0.0, f"rejected: score loss {reference - candidate.score:.4f} exceeds the "
                                   f"{score_tolerance:.4f} tolerance or is significant (p={cmp.p_worse:.3g}; "
                                   f"{scores})", "score_guard")
    if objective == "size":
        gain = size_gain(baseline.size_bytes, candidate.size_bytes)
        if gain > 0 and gain >= threshold:
            return verdict(True, gain, f"promoted: gain {signed_percent(gain)} smaller; {held}", "size")
        return verdict(False, gain, f"rejected: gain {signed_percent(gain)} smaller, short of {threshold:.0%}; {held}",
                       "size")
    if tc is None:
        gain = latency_gain(baseline.latency, candidate.latency)
        return verdict(False, gain, f"rejected: no repeated timings to judge a gain of {signed_percent(gain)} latency",
                       "latency")
    if tc.gain > 0 and tc.gain >= threshold and tc.p_faster <= alpha:
        return verdict(True, tc.gain, f"promoted: {_timing_text(tc)}; {held}", "latency")
    why = "short of the threshold" if tc.gain < threshold else f"not significant (p > α {alpha:g})"
    return verdict(False, tc.gain, f"rejected: {_timing_text(tc)} {why}; {held}", "latency")


def _rows(predictions: Predictions, mask: np.ndarray) -> Predictions:
    return Predictions(predictions.values[mask], None if predictions.scores is None else predictions.scores[mask])


def rehearsal_judge(
    *, decision: Decision, baseline: EvaluationResult, candidate: EvaluationResult, y_gate: np.ndarray,
    new_rows: np.ndarray, tolerance: float, alpha: float, min_new_rows: int,
) -> Decision:
    """``decision`` checked on the old and the new gate rows apart (see the module docstring). Pure.

    ``new_rows`` marks, per gate row, the rows added since the baseline was trained. With fewer
    than ``min_new_rows`` of them, or no old ones, the decision is returned unchanged.
    """
    new_rows = np.asarray(new_rows, dtype=bool)
    n_new, n_old = int(new_rows.sum()), int((~new_rows).sum())
    if n_new < min_new_rows or n_old == 0 or baseline.predictions is None or candidate.predictions is None:
        return decision
    metric = candidate.metric
    parts = {name: compare_paired(metric, y_gate[mask], _rows(baseline.predictions, mask),
                                  _rows(candidate.predictions, mask))
             for name, mask in (("old", ~new_rows), ("new", new_rows))}
    old, new = parts["old"], parts["new"]
    loss = old.baseline_score - old.candidate_score
    evidence = {**decision.evidence, "rehearsal": {
        "tolerance": tolerance, "alpha": alpha, "min_new_rows": min_new_rows, "old_loss": loss,
        **{name: {"n": cmp.n, "baseline_score": cmp.baseline_score, "candidate_score": cmp.candidate_score,
                  "delta": cmp.delta, "p_better": cmp.p_better, "p_worse": cmp.p_worse}
           for name, cmp in parts.items()}}}
    text = (f"old rows {metric} {old.baseline_score:.4f} → {old.candidate_score:.4f} (n={old.n}), "
            f"new rows {new.baseline_score:.4f} → {new.candidate_score:.4f} (n={new.n})")
    if not decision.promote:
        return dataclasses.replace(decision, reason=f"{decision.reason}; {text}", evidence=evidence)
    if loss > tolerance and old.p_worse <= alpha:
        return Decision(False, decision.gain, f"rejected: forgets the old data — loses {loss:.4f} {metric} on the "
                                              f"old gate rows, over the {tolerance:.4f} forgetting tolerance "
                                              f"(worse p={old.p_worse:.3g} ≤ α {alpha:g}); {text}",
                        {**evidence, "rule": "forgetting"})
    if new.candidate_score < new.baseline_score:
        return Decision(False, decision.gain, f"rejected: worse on the new data by "
                                              f"{new.baseline_score - new.candidate_score:.4f} {metric}; {text}",
                        {**evidence, "rule": "new_rows"})
    return dataclasses.replace(decision, reason=f"{decision.reason}; {text}", evidence=evidence)


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
            onnx_bytes=onnx_bytes, parent=parent, activate=True, score_reference=reference_after(decision, evaluation.score),
            note=f"run #{run.pk} {run.strategy}", reason=f"run #{run.pk} {run.strategy}: {decision.reason}"[:200],
        )
        if not run_mark_promoted(run_id=run.pk, version=version, gain=decision.gain, decision=decision.reason,
                                 candidate_metrics={**evaluation.as_dict(), "gate_test": decision.evidence}):
            # The run was cancelled or taken over meanwhile: nothing of this promotion may stay.
            raise RunNoLongerRunning(f"run #{run.pk} is no longer running; promotion abandoned")
        if not backup and parent is not None:
            previous = ModelVersion.objects.filter(pk=parent.pk).first()
            if previous is not None and not previous.is_active:
                version_discard(version=previous)
    return version


class RunNoLongerRunning(RuntimeError):
    """The run left the running state (cancelled, reconciled) while its worker was busy."""
