"""Training: improve accuracy by better training (trigger: score below 0.75).

Candidates, each trained with AdamW, an adaptive learning-rate schedule, early stopping on
the validation split and gradient clipping, on the training split plus system-generated
data (image shifts; fresh algorithm-labelled samples for generator tasks; the best model's
pseudo-labels otherwise):

1. fine-tune the active weights with a lower learning rate;
2. retrain the same genome from scratch with a cosine schedule;
3. when the model under-fits (its validation score stays under the trigger), retrain a
   widened copy of the genome — capacity is the usual reason a small model stalls.

The candidate with the best validation score is returned; a non-finite loss propagates
as ``NonFiniteLossError`` and fails the run without promotion.
"""

from __future__ import annotations

import copy

import torch

from improvement.strategies.base import (
    Applicability,
    Candidate,
    ModelMetrics,
    ProgressFn,
    StrategyContext,
    Triggers,
    register,
)
from improvement.strategies.common import Budget, clone_module, epoch_progress, train_config
from models_registry.nn.genome import build_module, set_normalisation, validate_genome
from models_registry.nn.training import train_module


def widen_genome(genome: dict, factor: float = 2.0, cap: int = 512, floor: int = 16) -> dict:
    """The same architecture with every hidden width (and CNN channel count) scaled up.

    Widths below ``floor`` jump to it: a 2-unit layer doubled is still a bottleneck.
    """
    g = copy.deepcopy(genome)
    for key in ("hidden", "channels", "encoder"):
        if key in g:
            g[key] = [min(cap, max(floor, w + 1, int(round(w * factor)))) for w in g[key]]
    if g.get("kind") in ("mlp", "cnn") and not g.get("hidden"):
        g["hidden"] = [32]
    return validate_genome(g)


@register
class TrainingStrategy:
    name = "training"
    objective = "score"
    description = "Fine-tune or retrain with AdamW, adaptive LR, early stopping, clipping and generated data."

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        if metrics.score is None:
            return Applicability(True, "no score measured yet", urgency=1.0)
        if metrics.score < triggers.training_score_below:
            gap = (triggers.training_score_below - metrics.score) / max(triggers.training_score_below, 1e-9)
            return Applicability(
                True, f"score {metrics.score:.4f} < {triggers.training_score_below:.2f}", urgency=min(1.0, 0.5 + gap)
            )
        return Applicability(False, f"score {metrics.score:.4f} ≥ {triggers.training_score_below:.2f}")

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        budget = Budget(context.time_budget_s)
        candidates: list[Candidate] = []
        base_lr = context.train_config.lr

        # 1. Fine-tune from the active weights.
        progress(0.0, "fine-tuning the active weights", None)
        tuned = clone_module(context.module)
        result = train_module(
            tuned, context.data, output_kind=context.output_kind,
            config=train_config(context, lr=base_lr / 3, max_seconds=budget.share(0.3), seed=context.seed),
            progress=epoch_progress(progress, start=0.0, span=0.3, label="fine-tune"),
            augment=context.augment, extra_data=context.extra_data,
        )
        candidates.append(Candidate(genome=context.genome, module=tuned, val_score=result.best_val_score,
                                    note="fine-tuned", details={"train": _summary(result)}))

        # 2. Retrain from scratch (a different basin can beat a stuck fine-tune).
        fresh = self._fresh(context, context.genome, seed=context.seed + 1)
        result = train_module(
            fresh, context.data, output_kind=context.output_kind,
            config=train_config(context, lr_schedule="cosine", max_seconds=budget.share(0.45), seed=context.seed + 1),
            progress=epoch_progress(progress, start=0.3, span=0.3, label="retrain"),
            augment=context.augment, extra_data=context.extra_data,
        )
        candidates.append(Candidate(genome=context.genome, module=fresh, val_score=result.best_val_score,
                                    note="retrained from scratch", details={"train": _summary(result)}))

        # 3. Under-fitting: give it more capacity.
        best_val = max(c.val_score or 0.0 for c in candidates)
        if best_val < context.params.get("underfit_below", 0.9) and budget.left > 1.0:
            wide_genome = widen_genome(context.genome)
            wide = self._fresh(context, wide_genome, seed=context.seed + 2)
            result = train_module(
                wide, context.data, output_kind=context.output_kind,
                config=train_config(context, lr_schedule="cosine", max_seconds=budget.share(0.95),
                                    seed=context.seed + 2),
                progress=epoch_progress(progress, start=0.6, span=0.4, label="retrain widened"),
                augment=context.augment, extra_data=context.extra_data,
            )
            candidates.append(Candidate(genome=wide_genome, module=wide, val_score=result.best_val_score,
                                        note="retrained with wider layers", details={"train": _summary(result)}))
        best = max(candidates, key=lambda c: c.val_score or 0.0)
        progress(1.0, f"best candidate: {best.note} (val {best.val_score:.4f})", None)
        return [best]

    @staticmethod
    def _fresh(context: StrategyContext, genome: dict, *, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        module = build_module(genome)
        set_normalisation(module, context.data.X_train, context.data.y_train, context.output_kind)
        return module


def _summary(result) -> dict:
    return {"best_val_score": result.best_val_score, "epochs": result.epochs_run, "stop": result.stop_reason,
            "seconds": round(result.seconds, 2)}
