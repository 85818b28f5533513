"""Training: improve accuracy by better training (trigger: score below 0.75).

The trigger reads the gate score, then the live score from clients' feedback
(``ModelMetrics.live_score``): a version whose live score is below the threshold beyond
sampling noise (the upper end of its 95 % interval) is retrained, the evidence in the reason.

Candidates, each trained with AdamW, an adaptive learning-rate schedule, early stopping on
the validation split and gradient clipping, on the training split plus system-generated
data (image shifts; fresh algorithm-labelled samples for generator tasks; the best model's
pseudo-labels otherwise):

* fine-tune the active weights with a lower learning rate, then retrain the same genome from
  scratch with a cosine schedule (a different basin can beat a stuck fine-tune);
* when the model under-fits (validation score under 0.9), first retrain a widened copy of the
  genome — capacity is the usual reason a small model stalls — then fine-tune.

The candidate with the best validation score is returned; a non-finite loss propagates
as ``NonFiniteLossError`` and fails the run without promotion.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from hormones.names import ADRENALINE
from hormones.priority import HormoneWeighting
from improvement.strategies.common import Budget, clone_module, epoch_progress, train_config
from improvement.strategies.registry import (
    ROLE_RETRAIN,
    Applicability,
    Candidate,
    ModelMetrics,
    ProgressFn,
    StrategyBase,
    StrategyContext,
    Triggers,
    register,
)
from models_registry.nn.evaluation import raw_score, torch_predict_fn
from models_registry.nn.genome import MAX_D_MODEL, build_module, set_normalisation, validate_genome
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.training import train_module


def widen_genome(genome: dict, factor: float = 2.0, cap: int = 512, floor: int = 32) -> dict:
    """The same architecture with every hidden width (and conv channel count) scaled up.

    Widths below ``floor`` jump to it: a 2-unit layer doubled is still a bottleneck. A
    transformer's ``d_model`` and ``ff_dim`` scale the same way, ``d_model`` rounded to a
    multiple of ``heads``. A supervised genome without a dense head gets one of 32 units.
    """
    g = copy.deepcopy(genome)

    def wider(w: int) -> int:
        return min(cap, max(floor, w + 1, int(round(w * factor))))

    for key in ("hidden", "channels", "encoder"):
        if key in g:
            g[key] = [wider(w) for w in g[key]]
    if g.get("kind") == "transformer":
        v = validate_genome(g)  # fills heads / ff_dim defaults before they are scaled
        heads = v["heads"]
        d_model = -(-wider(v["d_model"]) // heads) * heads  # up to a multiple of heads
        if d_model > max(cap, v["d_model"]):
            d_model = max(heads, cap // heads * heads)
        g.update(d_model=min(d_model, MAX_D_MODEL // heads * heads), heads=heads, ff_dim=wider(v["ff_dim"]))
    if g.get("kind") in ("mlp", "cnn", "conv1d", "transformer") and not g.get("hidden"):
        g["hidden"] = [32]
    return validate_genome(g)


@register
class TrainingStrategy(StrategyBase):
    name = "training"
    label = "Training"
    order = 10
    objective = "score"
    description = "Fine-tune or retrain with AdamW, adaptive LR, early stopping, clipping and generated data."
    # Urgency (adrenaline) puts retraining first.
    hormones = HormoneWeighting(raised_by={ADRENALINE: 1.5})
    roles = frozenset({ROLE_RETRAIN})

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        if metrics.score is None:
            return Applicability(True, "no score measured yet", urgency=1.0)
        threshold = triggers.training_score_below
        if metrics.score < threshold:
            gap = (threshold - metrics.score) / max(threshold, 1e-9)
            return Applicability(True, f"score {metrics.score:.4f} < {threshold:.2f}", urgency=min(1.0, 0.7 + 0.3 * gap))
        if metrics.live_score is not None and metrics.live_score_ci95 is not None:
            low, high = metrics.live_score_ci95
            if high < threshold:  # live traffic is served worse than the threshold, beyond sampling noise
                gap = (threshold - metrics.live_score) / max(threshold, 1e-9)
                return Applicability(
                    True, f"live score {metrics.live_score:.4f} [{low:.4f}, {high:.4f}] over {metrics.live_reports} "
                          f"feedback reports < {threshold:.2f} (gate score {metrics.score:.4f})",
                    urgency=min(1.0, 0.7 + 0.3 * gap))
        return Applicability(False, f"score {metrics.score:.4f} ≥ {threshold:.2f}")

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        budget = Budget(context.time_budget_s)
        base_lr = context.train_config.lr
        current = _val_score(context)
        underfit = current < context.params.get("underfit_below", 0.9)
        plan = [("fine-tune", 0.35), ("retrain", 1.0)]
        if underfit:
            # A model far below target with narrow layers is short of capacity first.
            plan = [("widen", 0.6), ("fine-tune", 1.0)]
        candidates: list[Candidate] = []
        start = 0.0
        span = 1.0 / len(plan)
        for i, (kind, share) in enumerate(plan):
            if i > 0 and budget.left < 1.0:
                break
            key = f"training-{i}-{kind}"
            saved = context.checkpoints.load(key)
            if saved is not None and saved[1].get("final"):
                # An earlier attempt of this run finished this phase: its candidate is kept as it was.
                state, meta = saved
                kept = build_module(meta["genome"])
                kept.load_state_dict(state)
                candidates.append(Candidate(genome=meta["genome"], module=kept.eval(), val_score=meta["val_score"],
                                            note=meta["note"], details={"train": meta.get("train", {}),
                                                                        "resumed": "finished by an earlier attempt"}))
                message = (f"{kind}: finished by an earlier attempt (val {meta['val_score']:.4f}); its candidate "
                           "is kept from the checkpoint")
                context.log(message)
                progress(start + span, message, None)
                start += span
                continue
            seconds = budget.share(share)
            if kind == "fine-tune":
                module, genome, config = clone_module(context.module), context.genome, train_config(
                    context, lr=base_lr / 3, max_seconds=seconds, seed=context.seed)
                note = "fine-tuned"
            elif kind == "retrain":
                module, genome = self._fresh(context, context.genome, seed=context.seed + 1), context.genome
                config = train_config(context, lr_schedule="cosine", max_seconds=seconds, seed=context.seed + 1)
                note = "retrained from scratch"
            else:
                genome = widen_genome(context.genome)
                module = self._fresh(context, genome, seed=context.seed + 2)
                config = train_config(context, lr_schedule="cosine", max_seconds=seconds, seed=context.seed + 2)
                note = "retrained with wider layers"
            resumed = saved[1] if saved is not None and saved[1].get("genome") == genome else None
            spent = 0.0
            if saved is not None and resumed is not None:
                # Cut short by a dead worker: go on from the best weights it reached, for the time left.
                module.load_state_dict(saved[0])
                spent = float(resumed.get("seconds", 0.0))
                config = dataclasses.replace(config, max_seconds=max(1.0, seconds - spent))
                message = (f"{kind}: resuming from its checkpoint (epoch {resumed.get('epoch')}, val "
                           f"{resumed.get('val_score', 0.0):.4f}) for the {config.max_seconds:.0f} s left")
                context.log(message)
                progress(start, message, None)
            else:
                progress(start, f"{note} (validation score now {current:.4f})", None)

            def on_best(state, event, key=key, genome=genome, note=note, spent=spent) -> None:
                context.checkpoints.save(key, state, {"genome": genome, "note": note, "epoch": event["epoch"],
                                                      "val_score": event["val_score"],
                                                      "seconds": spent + event["elapsed_s"]})

            result = train_module(
                module, context.data, output_kind=context.output_kind, config=config,
                progress=epoch_progress(progress, start=start, span=span, label=kind),
                augment=context.augment, extra_data=context.extra_data, on_best=on_best,
            )
            summary = _summary(result)
            if resumed is not None:
                summary["resumed_from_epoch"] = resumed.get("epoch")
            context.checkpoints.save(key, module.state_dict(), {"genome": genome, "note": note,
                                                                "val_score": result.best_val_score,
                                                                "train": summary}, final=True)
            candidates.append(Candidate(genome=genome, module=module, val_score=result.best_val_score, note=note,
                                        details={"train": summary}))
            start += span
        best = max(candidates, key=lambda c: c.val_score or 0.0)
        progress(1.0, f"best candidate: {best.note} (val {best.val_score:.4f})", None)
        return [best]

    @staticmethod
    def _fresh(context: StrategyContext, genome: dict, *, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        module = build_module(genome)
        set_normalisation(module, context.data.X_train, context.data.y_train, context.output_kind)
        return module


def _val_score(context: StrategyContext) -> float:
    X_val = context.data.X_val
    raw = torch_predict_fn(context.module)(X_val)
    y_val = context.data.y_val if context.output_kind != RECONSTRUCTION else X_val
    if y_val is None:
        raise ValueError(f"output_kind {context.output_kind!r} needs validation targets")
    return raw_score(context.output_kind, y_val, raw, context.train_config.metric)


def _summary(result) -> dict:
    return {"best_val_score": result.best_val_score, "epochs": result.epochs_run, "stop": result.stop_reason,
            "seconds": round(result.seconds, 2)}
