"""Knowledge distillation (trigger: another implementation of the task scores ≥ 0.85 and this one lower).

Teacher: the best version of any other model of the task, or the algorithmic implementation
when it scores higher. Student: the target model (its own genome and weights). Soft targets
with a temperature plus (when ``alpha`` < 1) the hard labels; attention/feature matching when both are CNNs;
system-generated inputs labelled by the teacher (fresh samples for generator tasks, else shifted,
noisy and blended copies of the training rows) let the student match the teacher's function
around the data, not only on it.
"""

from __future__ import annotations

import numpy as np

from hormones.names import OXYTOCIN
from hormones.priority import HormoneWeighting
from improvement.nn.distillation import distill, perturbed_inputs, pseudo_label
from improvement.strategies.common import Budget, clone_module, epoch_progress, train_config
from improvement.strategies.registry import (
    NEED_TEACHER,
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
from models_registry.nn.kinds import CLASSES, RECONSTRUCTION
from models_registry.nn.training import train_module

# Perturbed copies of the training split per epoch for the teacher to label: three of each row
# (as in bench/bench_distillation.py), fewer when that would pass EXTRA_INPUTS_CAP rows.
EXTRA_COPIES = 3
EXTRA_INPUTS_CAP = 4096
# Fresh samples of a generator task: an algorithmic teacher (a numerical model) may be slow.
FRESH_SAMPLES_CAP = 1024
# Soft targets at temperature 4; the teacher term takes the whole loss by default (function
# matching: the student copies the teacher on the split and on every perturbed copy; the labels
# still choose the kept epoch and judge the promotion). Run params ``temperature``/``alpha``.
TEMPERATURE = 4.0
ALPHA = 1.0


def extra_inputs_for(context: StrategyContext):
    """Unlabelled inputs for the teacher to label each epoch: fresh samples, or perturbed training rows."""
    rng = np.random.default_rng(context.seed + 17)
    X = np.asarray(context.data.X_train, dtype=np.float32)
    if context.sample_inputs is not None:
        fresh = min(FRESH_SAMPLES_CAP, len(X))
        return lambda epoch: np.asarray(context.sample_inputs(fresh, rng), dtype=np.float32)
    count = min(EXTRA_COPIES * len(X), max(len(X), EXTRA_INPUTS_CAP))
    return lambda epoch: perturbed_inputs(X, rng, count=count)[0]


@register
class DistillationStrategy(StrategyBase):
    name = "distillation"
    label = "Knowledge distillation"
    order = 40
    objective = "score"
    description = "Teacher-student learning from the best implementation in the task."
    # Bonding (oxytocin): learn from the strong.
    hormones = HormoneWeighting(raised_by={OXYTOCIN: 1.5})
    needs = frozenset({NEED_TEACHER})
    explore_drive = OXYTOCIN

    def fired_release(self, fired: list[ModelMetrics]) -> TriggerRelease | None:
        return TriggerRelease(cause="a strong teacher exists for a weaker model", hormone=OXYTOCIN, delta=0.05)

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
        # both_cnn implies a teacher_module; the check names it for mypy
        teacher = (context.teacher_module if both_cnn and context.teacher_module is not None
                   else context.teacher_fn)
        progress(0.0, f"distilling from {context.teacher_label}", None)
        if context.teacher_module is None and context.output_kind != CLASSES:
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
            extra_inputs=extra_inputs_for(context),
            temperature=float(context.params.get("temperature", TEMPERATURE)),
            alpha=float(context.params.get("alpha", ALPHA)),
            feature_matching=0.5 if both_cnn else 0.0,
        )
        return [Candidate(genome=context.genome, module=student, val_score=result.best_val_score,
                          note=f"distilled from {context.teacher_label}",
                          details={"teacher": context.teacher_label, "epochs": result.epochs_run,
                                   "feature_matching": both_cnn})]

    @staticmethod
    def _learn_from_labels(context: StrategyContext, student, budget: Budget, progress: ProgressFn):
        inputs = extra_inputs_for(context)
        teacher_fn = context.teacher_fn
        if teacher_fn is None:  # build_candidates returns early without one
            raise ValueError("learning from a teacher's labels needs teacher_fn")

        def extra(epoch: int):
            X = inputs(epoch)
            return X, pseudo_label(teacher_fn, X, context.output_kind)

        return train_module(
            student, context.data, output_kind=context.output_kind,
            config=train_config(context, lr=context.train_config.lr / 2, max_seconds=budget.share(0.95)),
            progress=epoch_progress(progress, start=0.0, span=0.95, label="distill"),
            augment=context.augment, extra_data=extra if context.output_kind != RECONSTRUCTION else None,
        )
