"""Knowledge distillation (trigger: another implementation of the task scores ≥ 0.85 and this one lower).

Teacher: the best version of any other model of the task, or the algorithmic implementation
when it scores higher. Student: the target model (its own genome and weights). Soft targets
with a temperature plus the hard labels; attention/feature matching when both are CNNs;
system-generated inputs pseudo-labelled by the teacher widen what the student learns from.
"""

from __future__ import annotations

import numpy as np

from improvement.nn.distillation import distill
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


def extra_inputs_for(context: StrategyContext, *, per_epoch: int):
    """Unlabelled inputs for the teacher to label: fresh samples, or jittered training rows."""
    rng = np.random.default_rng(context.seed + 17)
    if context.sample_inputs is not None:
        return lambda epoch: np.asarray(context.sample_inputs(per_epoch, rng), dtype=np.float32)
    X = np.asarray(context.data.X_train, dtype=np.float32)
    scale = X.reshape(len(X), -1).std(axis=0).reshape(X.shape[1:]) * 0.05

    def jittered(epoch: int) -> np.ndarray:
        index = rng.integers(0, len(X), size=per_epoch)
        return (X[index] + rng.normal(size=(per_epoch, *X.shape[1:])) * scale).astype(np.float32)

    return jittered


@register
class DistillationStrategy:
    name = "distillation"
    objective = "score"
    description = "Teacher-student learning from the best implementation in the task."

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        if not triggers.cross_model_distillation:
            return Applicability(False, "cross-model distillation is off")
        teacher = metrics.teacher_score
        if teacher is None:
            return Applicability(False, "no teacher in the task")
        if teacher < triggers.distillation_teacher_min_score:
            return Applicability(False, f"best teacher scores {teacher:.4f} < {triggers.distillation_teacher_min_score:.2f}")
        if metrics.score is not None and metrics.score >= teacher:
            return Applicability(False, f"already at the teacher's score ({metrics.score:.4f} ≥ {teacher:.4f})")
        gap = teacher - (metrics.score or 0.0)
        # Less urgent than retraining a model under the training trigger: a student with too
        # little capacity cannot absorb a teacher, so capacity problems go to training first.
        return Applicability(True, f"teacher scores {teacher:.4f}, this model {metrics.score or 0:.4f}",
                             urgency=min(0.6, 0.2 + 0.4 * gap))

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        if context.teacher_fn is None:
            return []
        budget = Budget(context.time_budget_s)
        student = clone_module(context.module)
        both_cnn = (
            context.genome.get("kind") == "cnn" and context.teacher_module is not None
            and getattr(context.teacher_module, "genome", {}).get("kind") == "cnn"
        )
        teacher = context.teacher_module if both_cnn else context.teacher_fn
        progress(0.0, f"distilling from {context.teacher_label}", None)
        if context.teacher_module is None and context.output_kind != "classes":
            # An algorithmic teacher of values is exact but may be slow (a numerical model):
            # asking it about every training batch would repeat the labels the split already has.
            # It teaches through its labels of fresh system-generated inputs instead.
            result = self._learn_from_labels(context, student, budget, progress)
            return [Candidate(genome=context.genome, module=student, val_score=result.best_val_score,
                              note=f"distilled from {context.teacher_label} (teacher-labelled inputs)",
                              details={"teacher": context.teacher_label, "epochs": result.epochs_run})]
        result = distill(
            student, teacher, context.data, output_kind=context.output_kind,
            config=train_config(context, lr=context.train_config.lr / 2, max_seconds=budget.share(0.95)),
            progress=epoch_progress(progress, start=0.0, span=0.95, label="distill"),
            augment=context.augment,
            extra_inputs=extra_inputs_for(context, per_epoch=min(1024, len(context.data.X_train))),
            feature_matching=0.5 if both_cnn else 0.0,
        )
        return [Candidate(genome=context.genome, module=student, val_score=result.best_val_score,
                          note=f"distilled from {context.teacher_label}",
                          details={"teacher": context.teacher_label, "epochs": result.epochs_run,
                                   "feature_matching": both_cnn})]

    @staticmethod
    def _learn_from_labels(context: StrategyContext, student, budget: Budget, progress: ProgressFn):
        from improvement.nn.distillation import pseudo_label
        from models_registry.nn.training import train_module

        inputs = extra_inputs_for(context, per_epoch=min(1024, len(context.data.X_train)))

        def extra(epoch: int):
            X = inputs(epoch)
            return X, pseudo_label(context.teacher_fn, X, context.output_kind)

        return train_module(
            student, context.data, output_kind=context.output_kind,
            config=train_config(context, lr=context.train_config.lr / 2, max_seconds=budget.share(0.95)),
            progress=epoch_progress(progress, start=0.0, span=0.95, label="distill"),
            augment=context.augment, extra_data=extra if context.output_kind != "reconstruction" else None,
        )
