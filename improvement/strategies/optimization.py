"""Optimization: reduce latency and size (trigger: p95 latency above the task's budget).

Builds several candidates and keeps the fastest whose validation score stays within the
tolerance of the current model's:

* the same weights on other runtimes — ONNX Runtime fp32 and dynamic int8, torch dynamic int8;
* structured pruning that physically narrows layers (25 % and 50 % of hidden units), then a
  short fine-tune;
* a distilled student with half the widths, trained against the current model.

Every variant is timed on this machine, warm, at batch 1 and 256 (p50); the speed measure is
the geometric mean of the two. Unstructured sparsity masks are never used: they do not speed
up dense CPU kernels.
"""

from __future__ import annotations

import copy
import math

import torch

from hormones.names import CORTISOL
from hormones.priority import HormoneWeighting, latency_severity
from improvement.nn.distillation import distill
from improvement.nn.pruning import prune_genome_and_module
from improvement.strategies.common import Budget, clone_module, epoch_progress, runtime_variants, train_config
from improvement.strategies.registry import (
    Applicability,
    Candidate,
    ModelMetrics,
    ProgressFn,
    StrategyBase,
    StrategyContext,
    TriggerRelease,
    Triggers,
    register,
)
from models_registry.nn.genome import GenomeError, build_module, set_normalisation, validate_genome
from models_registry.nn.training import train_module


def half_genome(genome: dict) -> dict | None:
    """The same architecture at half the widths (a distillation student), or None if nothing halves.

    Hidden widths, conv channels and encoder widths halve; a transformer's ``d_model`` and
    ``ff_dim`` too, its ``heads`` dropping to the largest count that still divides the new
    ``d_model``. The input, output and an autoencoder's code size never change.
    """
    try:
        g = validate_genome(genome)
    except GenomeError:
        return None
    original = copy.deepcopy(g)
    for key in ("hidden", "channels", "encoder"):
        if g.get(key):
            g[key] = [max(1, w // 2) for w in g[key]]
    if g["kind"] == "transformer":
        d_model = max(1, g["d_model"] // 2)
        g.update(d_model=d_model, heads=math.gcd(g["heads"], d_model), ff_dim=max(1, g["ff_dim"] // 2))
    if g == original:
        return None
    try:
        return validate_genome(g)
    except GenomeError:
        return None


@register
class OptimizationStrategy(StrategyBase):
    name = "optimization"
    label = "Optimization"
    order = 20
    objective = "latency"
    description = "ONNX Runtime / int8 / structured pruning / distilled student; fastest within tolerance."
    # Stress (cortisol) makes things cheaper first.
    hormones = HormoneWeighting(raised_by={CORTISOL: 1.5})

    def fired_release(self, fired: list[ModelMetrics]) -> TriggerRelease | None:
        """Latency over budget is a stress event: the further over, the larger the release."""
        severity = max((latency_severity(m.latency_p95_ms, m.latency_budget_ms) for m in fired), default=0.0)
        return TriggerRelease(cause="latency over budget seen by the cycle", stress_event="latency_over_budget",
                              severity=severity, persistence=0.5)

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        limit = triggers.optimization_latency_ms or metrics.latency_budget_ms
        if metrics.latency_p95_ms is None:
            return Applicability(False, "latency not measured yet")
        seen = "live" if metrics.latency_source == "live" else "evaluation"
        if metrics.latency_p95_ms > limit:
            over = metrics.latency_p95_ms / limit - 1.0
            return Applicability(True, f"p95 latency {metrics.latency_p95_ms:.2f} ms ({seen}) > {limit:g} ms",
                                 urgency=min(1.0, 0.4 + over))
        return Applicability(False, f"p95 latency {metrics.latency_p95_ms:.2f} ms ({seen}) ≤ {limit:g} ms")

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        budget = Budget(context.time_budget_s)
        base = clone_module(context.module).eval()
        progress(0.02, "timing the current weights on every runtime", None)
        variants = runtime_variants(context.genome, base, context, "current")
        reference = next(v for v in variants if v.runtime == "torch_fp32")
        floor = reference.val_score - context.score_tolerance

        for i, fraction in enumerate((0.25, 0.5)):
            if budget.left < 2.0:
                break
            progress(0.2 + 0.25 * i, f"structured pruning {fraction:.0%} + fine-tune", None)
            genome, pruned = prune_genome_and_module(context.genome, base, fraction=fraction)
            if genome == context.genome:
                continue
            train_module(pruned, context.data, output_kind=context.output_kind,
                         config=train_config(context, lr=context.train_config.lr / 3,
                                             max_seconds=budget.share(0.25), seed=context.seed + i),
                         progress=epoch_progress(progress, start=0.2 + 0.25 * i, span=0.2, label=f"prune {fraction:.0%}"),
                         augment=context.augment, extra_data=context.extra_data)
            variants += runtime_variants(genome, pruned, context, f"pruned {fraction:.0%}")

        small = half_genome(context.genome)
        if small is not None and budget.left > 2.0:
            progress(0.7, "distilling a half-width student", None)
            torch.manual_seed(context.seed)
            student = build_module(small)
            set_normalisation(student, context.data.X_train, context.data.y_train, context.output_kind)
            distill(student, base, context.data, output_kind=context.output_kind,
                    config=train_config(context, max_seconds=budget.share(0.9), seed=context.seed + 7),
                    progress=epoch_progress(progress, start=0.7, span=0.2, label="student"),
                    augment=context.augment)
            variants += runtime_variants(small, student, context, "half-width student")

        eligible = [v for v in variants if v.val_score >= floor]
        best = min(eligible, key=lambda v: v.speed_cost) if eligible else reference
        table = [{"variant": v.label, "val_score": round(v.val_score, 5), "p50_ms_b1": v.latency.get("p50_ms_b1"),
                  "p50_ms_b256": v.latency.get("p50_ms_b256")} for v in variants]
        progress(0.95, f"fastest within tolerance: {best.label}", None)
        return [Candidate(genome=best.genome, module=best.module, runtime=best.runtime, onnx_bytes=best.onnx_bytes,
                          val_score=best.val_score, note=f"optimization: {best.label}",
                          details={"variants": table, "floor": floor})]
