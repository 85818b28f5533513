"""The lineage's reference score: kept through "score held" promotions, reset by a score gain,
and dropped when the gate rows it was measured on change."""

from __future__ import annotations

import pytest

from improvement.choices import RunOrigin, RunStatus
from improvement.models import ImprovementRun
from improvement.runs.promotion import Decision, version_promote
from models_registry.dataset_versions import task_rows_append
from models_registry.evaluation import candidate_evaluate, version_rescore, version_score_reference
from models_registry.implementations import fresh_version_module
from models_registry.services import model_create
from tests.factories import MLP, blobs_csv, csv_task, trained_version

pytestmark = pytest.mark.django_db


def _promote(parent, rule: str, reference: float | None):
    run = ImprovementRun.objects.create(
        model=parent.model, strategy="optimization", status=RunStatus.RUNNING, origin=RunOrigin.LOOP,
        baseline_version=parent, objective="latency", baseline_metrics=parent.metrics, worker="test")
    module = fresh_version_module(parent)
    evaluation = candidate_evaluate(task=parent.model.task, module=module, measure=False)
    evidence = {"rule": rule} if reference is None else {"rule": rule, "score_reference": reference}
    return version_promote(run=run, genome=dict(parent.genome), state_dict=module.state_dict(), evaluation=evaluation,
                           runtime="torch_fp32", onnx_bytes=None, decision=Decision(True, 0.3, "promoted: test", evidence),
                           parent=parent)


def test_the_reference_follows_the_lineage_and_the_gate_rows():
    task = csv_task(n=300, seed=5)
    model = model_create(task=task, name="m")
    first = trained_version(model, genome=MLP, epochs=3)
    assert version_score_reference(first) == pytest.approx(first.score)

    # A held promotion keeps the higher reference its decision was measured from.
    held = _promote(first, "latency", reference=first.score + 0.02)
    assert held.score == pytest.approx(first.score)  # the same weights
    assert version_score_reference(held) == pytest.approx(first.score + 0.02)
    # A promotion that gained score starts the lineage's reference again from its own score.
    gained = _promote(held, "score", reference=first.score + 0.02)
    assert version_score_reference(gained) == pytest.approx(gained.score)

    # Appended rows change the gate: a reference measured on the old gate rows is not used ...
    task_rows_append(task=task, filename="more.csv", content=blobs_csv(n=300, seed=6))
    held.model.task.refresh_from_db()
    assert held.model.task.n_gate != held.metrics["n_rows"]
    assert version_score_reference(held) is None
    # ... until the version is re-measured on the current splits, which restarts it there.
    version_rescore(version=held, measure=False)
    assert version_score_reference(held) == pytest.approx(held.score)
    assert held.metrics["n_rows"] == held.model.task.n_gate
