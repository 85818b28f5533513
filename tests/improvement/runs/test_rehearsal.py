"""Retraining without forgetting: a run after appended (shifted) rows is judged on old and new gate rows apart.

The task: two classes from four features. The rows it is created with follow one rule (class b
when f0 > 0, with a margin); the appended rows come from a shifted distribution (f2 moved by +6)
and follow another (class b when f1 > 0). A model trained on the old rows only is right on about half of
the new ones; one trained on the new rows only forgets the old ones the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig
from improvement.runs.context import baseline_evaluate
from improvement.runs.execution import candidates_judge, gate_new_rows, run_execute
from improvement.runs.lifecycle import run_create
from improvement.runs.promotion import Decision, rehearsal_judge
from improvement.scheduler.genetic_triggers import data_growth_evidence
from improvement.strategies.registry import Candidate
from models_registry.dataset_versions import task_rows_append, version_new_rows_start
from models_registry.implementations import fresh_version_module, task_dataset
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.training import TrainConfig, TrainData, train_module
from models_registry.selectors import version_active
from models_registry.services import model_create, task_create_from_upload
from project.panel.selectors import run_page
from tests.factories import trained_version

pytestmark = pytest.mark.django_db

GENOME = {"kind": "mlp", "input_shape": [4], "output_dim": 2, "hidden": [16], "activation": "relu",
          "dropout": 0.0, "norm": "none"}
N_OLD, N_NEW = 300, 900


def _csv(n: int, *, seed: int, shifted: bool) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, size=(n, 4))
    rule = 1 if shifted else 0
    # A margin around each rule's boundary: which model knows which rule is then beyond doubt.
    X[:, rule] += np.where(X[:, rule] > 0, 0.5, -0.5)
    if shifted:
        X[:, 2] += 6.0
    label = X[:, rule] > 0
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v:.5f}" for v in row) + (",b" if b else ",a")
                                     for row, b in zip(X, label, strict=True)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def grown():
    """A model trained on the old rows, then shifted rows appended to its task: (model, baseline version)."""
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 20})
    task = task_create_from_upload(name="shifting", filename="old.csv", content=_csv(N_OLD, seed=1, shifted=False))
    model = model_create(task=task, name="m")
    baseline = trained_version(model, genome=GENOME, epochs=30)
    assert baseline.metrics["dataset_rows"] == N_OLD
    task_rows_append(task=task, filename="new.csv", content=_csv(N_NEW, seed=2, shifted=True))
    model.task.refresh_from_db()
    return model, baseline


def _new_only_module(task, start: int):
    """A module trained on the appended rows alone — what retraining without rehearsal would make."""
    dataset = task_dataset(task)
    train = dataset.splits["train"][dataset.splits["train"] >= start]
    val = dataset.splits["val"][dataset.splits["val"] >= start]
    module = build_module(GENOME)
    set_normalisation(module, dataset.X[train], dataset.y[train], task.output_kind)
    data = TrainData(X_train=dataset.X[train], y_train=dataset.y[train], X_val=dataset.X[val], y_val=dataset.y[val])
    train_module(module, data, output_kind=task.output_kind,
                 config=TrainConfig(epochs=40, seed=0, patience=40, metric=task.metric))
    module.eval()
    return module


def test_new_rows_are_those_appended_after_the_baseline_was_trained(grown):
    model, baseline = grown
    assert version_new_rows_start(version=baseline) == N_OLD
    new_rows = gate_new_rows(task=model.task, baseline_version=baseline)
    assert new_rows is not None
    gate = task_dataset(model.task).splits["gate"]
    np.testing.assert_array_equal(new_rows, gate >= N_OLD)
    assert 20 <= new_rows.sum() < len(gate)


def test_growth_triggered_training_rehearses_improves_on_new_rows_and_keeps_the_old(grown):
    model, baseline = grown
    assert data_growth_evidence(model) is not None, "the appended rows fire the data-growth trigger"
    run = run_create(model=model, strategy="training", params={"time_budget_s": 20, "epochs": 60}, enqueue=False)
    assert run_execute(run_id=run.pk) == RunStatus.PROMOTED
    run.refresh_from_db()
    assert run.status == RunStatus.PROMOTED, run.decision
    rehearsal = run.candidate_metrics["gate_test"]["rehearsal"]
    old, new = rehearsal["old"], rehearsal["new"]
    assert new["candidate_score"] > new["baseline_score"] + 0.2  # learned the new rule
    # Kept the old rule: within the tolerance, or a loss the paired test cannot tell from noise.
    assert old["baseline_score"] - old["candidate_score"] <= rehearsal["tolerance"] or old["p_worse"] > rehearsal["alpha"]
    assert old["candidate_score"] >= 0.9
    assert rehearsal["old_loss"] == pytest.approx(old["baseline_score"] - old["candidate_score"])
    assert new["n"] + old["n"] == model.task.n_gate
    assert "old rows" in run.decision and "new rows" in run.decision
    assert "rehearsal: rows 300–" in run.log and "old and new together" in run.log, run.log
    model.refresh_from_db()
    assert version_active(model=model).pk == run.result_version_id
    # The run's page shows both parts' scores next to the overall one.
    labels = [row["label"] for row in run_page(run)["metrics"]]
    assert f"score, old gate rows (n={old['n']})" in labels and f"score, new gate rows (n={new['n']})" in labels


def test_a_candidate_that_forgets_the_old_rows_is_refused(grown):
    model, baseline = grown
    task, config = model.task, ImprovementConfig.load()
    baseline_eval = baseline_evaluate(task, baseline, fresh_version_module(baseline))
    forgetful = Candidate(genome=GENOME, module=_new_only_module(task, N_OLD), note="new rows only")

    # On the gate as a whole it wins (most gate rows are new) ...
    _, _, overall = candidates_judge(strategy_objective="score", task=task, baseline=baseline_eval,
                                     candidates=[forgetful], config=config)
    assert overall.promote, overall.reason
    # ... but judged on the old and new rows apart it is refused for what it lost on the old.
    _, _, decision = candidates_judge(strategy_objective="score", task=task, baseline=baseline_eval,
                                      candidates=[forgetful], config=config, baseline_version=baseline)
    assert not decision.promote
    assert decision.evidence["rule"] == "forgetting"
    rehearsal = decision.evidence["rehearsal"]
    assert rehearsal["old_loss"] > config.forgetting_tolerance and rehearsal["old"]["p_worse"] <= config.promotion_alpha
    assert rehearsal["new"]["candidate_score"] > rehearsal["new"]["baseline_score"]
    assert "forgets the old data" in decision.reason
    assert f"{rehearsal['old_loss']:.4f}" in decision.reason and f"{config.forgetting_tolerance:.4f}" in decision.reason
    assert f"{rehearsal['new']['candidate_score']:.4f}" in decision.reason


def test_too_few_new_gate_rows_leave_the_decision_as_it_was(grown):
    model, baseline = grown
    task = model.task
    evaluation = baseline_evaluate(task, baseline, fresh_version_module(baseline))
    y_gate = task_dataset(task).gate[1]
    new_rows = gate_new_rows(task=task, baseline_version=baseline)
    assert new_rows is not None
    decision = Decision(True, 0.5, "promoted: test", {"rule": "score"})
    unchanged = rehearsal_judge(decision=decision, baseline=evaluation, candidate=evaluation, y_gate=y_gate,
                                new_rows=new_rows, tolerance=0.01, alpha=0.05, min_new_rows=int(new_rows.sum()) + 1)
    assert unchanged is decision
    judged = rehearsal_judge(decision=decision, baseline=evaluation, candidate=evaluation, y_gate=y_gate,
                             new_rows=new_rows, tolerance=0.01, alpha=0.05, min_new_rows=1)
    assert judged.promote and judged.evidence["rehearsal"]["old_loss"] == 0.0


def test_a_candidate_worse_on_the_new_rows_is_refused(grown):
    model, baseline = grown
    task = model.task
    y_gate = task_dataset(task).gate[1]
    new_rows = gate_new_rows(task=task, baseline_version=baseline)
    assert new_rows is not None
    # Judged the other way round: the old-rows-only version against a model that learned the new rows.
    knows_new = candidates_judge(strategy_objective="score", task=task,
                                 baseline=baseline_evaluate(task, baseline, fresh_version_module(baseline)),
                                 candidates=[Candidate(genome=GENOME, module=_new_only_module(task, N_OLD))],
                                 config=ImprovementConfig.load())[1]
    old_only = baseline_evaluate(task, baseline, fresh_version_module(baseline))
    decision = rehearsal_judge(decision=Decision(True, 0.2, "promoted: test", {"rule": "score"}), baseline=knows_new,
                               candidate=old_only, y_gate=y_gate, new_rows=new_rows, tolerance=0.01, alpha=0.05,
                               min_new_rows=20)
    assert not decision.promote and decision.evidence["rule"] == "new_rows"
    assert "worse on the new data" in decision.reason
