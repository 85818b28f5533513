"""The sealed test split: read by no decision, enforced in one place and checked three ways.

1. The accessor refuses inside any decision (``deciding``).
2. The code of every decision path never names the test split or a test score.
3. End to end, every decision (the cycle's triggers, the teacher, the promotion, serving) comes
   out identical when the test rows' labels are scrambled and every stored test score is
   replaced by noise: nothing a decision does depends on them.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.context import teacher_for
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import run_create
from improvement.scheduler.cycle import cycle_run
from models_registry import datasets
from models_registry.evaluation import algorithm_evaluate
from models_registry.implementations import caches_clear, task_dataset
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.sealed import SealedSplitRead, deciding
from models_registry.services import model_create
from models_registry.serving.switching import serving_reevaluate
from tests.factories import csv_task, trained_version

ROOT = Path(__file__).resolve().parents[2]
WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}
#: Every module whose code makes a decision between runs.
DECISION_MODULES = [
    "improvement/scheduler/cycle.py", "improvement/scheduler/triggers.py", "improvement/scheduler/genetic_triggers.py",
    "improvement/runs/promotion.py", "improvement/runs/context.py", "improvement/runs/execution.py",
    "improvement/strategies/registry.py", "models_registry/serving/switching.py", "models_registry/serving/shadow.py",
    "models_registry/selectors.py",
]


@pytest.mark.django_db
def test_the_sealed_split_refuses_to_be_read_inside_a_decision():
    task = csv_task()
    dataset = task_dataset(task)
    X_test, _ = dataset.sealed_test()  # a report: allowed
    assert len(X_test) == task.n_test
    with deciding("promotion"), pytest.raises(SealedSplitRead, match="while deciding \\(promotion\\)"):
        dataset.sealed_test()
    with deciding("cycle"), deciding("teacher"), pytest.raises(SealedSplitRead, match="cycle > teacher"):
        dataset.sealed_test()
    assert len(dataset.sealed_test()[0]) == task.n_test  # the scope ended


def test_no_decision_path_names_the_test_split_or_a_test_score():
    offenders = []
    for relative in DECISION_MODULES:
        source = (ROOT / relative).read_text(encoding="utf-8")
        for needle in ("sealed_test(", "test_score", "test_ci95", 'splits["test"]', "ScoreSplit.TEST"):
            if needle in source:
                offenders.append(f"{relative}: {needle}")
    assert offenders == []


def test_decision_paths_run_inside_a_decision_scope():
    """A decision entry point without its scope would escape the guard: each one opens it."""
    from improvement import predictor
    from improvement.runs import context, execution
    from improvement.scheduler import cycle
    from models_registry.serving import switching

    for function, scope in ((cycle.cycle_run, 'deciding("cycle")'), (context.teacher_for, 'deciding("teacher")'),
                            (execution.candidates_judge, 'deciding("promotion")'),
                            (switching.serving_reevaluate, 'deciding("serving")'),
                            (predictor.gain_predictor, 'deciding("predictor check")')):
        assert scope in inspect.getsource(function), function.__qualname__


def _world() -> dict:
    """One task, its algorithm, a weak model and a strong one; every decision the loop makes about them."""
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 60})
    task = csv_task(n=400, seed=3)
    algorithm_evaluate(task=task, measure=False)
    weak = model_create(task=task, name="weak")
    trained_version(weak, genome=WEAK, epochs=1)
    middling = model_create(task=task, name="middling")
    trained_version(middling, genome={**WEAK, "hidden": [4]}, epochs=3)
    strong = model_create(task=task, name="strong")
    trained_version(strong, epochs=30)
    outcome: dict = {}
    record = cycle_run(trigger="forced")
    outcome["cycle"] = sorted((d["model"], d["strategy"], d["kind"], d["chosen"], d["why"]) for d in record.decisions)
    ImprovementRun.objects.update(status="cancelled")  # only the run below executes
    teacher = teacher_for(task, exclude_model_id=weak.pk)
    outcome["teacher"] = (teacher[2], round(teacher[3], 6)) if teacher else None
    run = run_create(model=weak, strategy="training", enqueue=False,
                     params={"seed": 7, "epochs": 25, "patience": 25, "time_budget_s": 60})
    outcome["status"] = run_execute(run_id=run.pk)
    run.refresh_from_db()
    outcome["decision"] = (run.status, round(run.gain or 0.0, 6), run.decision.split(" McNemar")[0])
    serving = serving_reevaluate(task=task)
    outcome["serving"] = (serving.decision.implementation, serving.decision.evidence.get("neural_version_id") and
                          str(ModelVersion.objects.get(pk=serving.decision.evidence["neural_version_id"])))
    outcome["gate_scores"] = sorted(round(v, 6) for v in ModelVersion.objects.values_list("score", flat=True))
    outcome["test_scores"] = sorted(round(v, 6) for v in ModelVersion.objects.values_list("test_score", flat=True))
    return outcome


@pytest.mark.django_db
def test_every_decision_is_the_same_when_the_test_rows_are_scrambled(monkeypatch):
    honest = _world()
    assert honest["status"] == "promoted", honest["decision"]  # the whole gate ran, version creation included
    assert honest["teacher"] is not None and any(chosen for _, _, _, chosen, _ in honest["cycle"])
    for model in (ImprovementRun, ModelVersion, NeuralModel, Task):
        model.objects.all().delete()
    caches_clear()

    real = datasets.TaskDataset.sealed_test

    def scrambled(self):
        X, y = real(self)
        return X, np.random.default_rng(99).permutation(np.asarray(y)) + 0 * y

    monkeypatch.setattr(datasets.TaskDataset, "sealed_test", scrambled)
    # Every stored test score is adversarial too (the worse the gate score, the better the test score):
    # a decision that read one would choose differently.
    original_save = ModelVersion.save

    def adversarial_save(self, *args, **kwargs):
        if self.test_score is not None and self.score is not None:
            self.test_score = 1.0 - self.score
        original_save(self, *args, **kwargs)

    monkeypatch.setattr(ModelVersion, "save", adversarial_save)
    blind = _world()
    assert blind["test_scores"] != honest["test_scores"], "the scrambling reached the reports"
    for key in ("cycle", "teacher", "status", "decision", "serving", "gate_scores"):
        assert blind[key] == honest[key], key
