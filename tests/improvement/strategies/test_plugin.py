"""Adding a strategy is one module: a toy strategy, registered here only, is known everywhere.

The toy "weight-averaging" strategy (a real, if modest, one: it averages the active weights with
a briefly fine-tuned copy) is defined in this test module and nowhere else. Once registered it
must appear in the database choices, the REST API, the CLI, the hormone priorities, the
predictor's features and the cycle's proposals, and a run of it must execute end to end.
"""

from __future__ import annotations

import io

import pytest
import torch
from django.core.exceptions import ValidationError
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from hormones.priority import HormoneWeighting, strategy_weights
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.nn.gain_model import run_feature_names
from improvement.predictor import run_features
from improvement.scheduler.cycle import proposals_collect
from improvement.strategies.common import clone_module, train_config
from improvement.strategies.registry import (
    Applicability,
    Candidate,
    ModelMetrics,
    ProgressFn,
    StrategyBase,
    StrategyContext,
    Triggers,
    all_strategies,
    registered,
    strategy_choices,
    strategy_names,
    strategy_weightings,
)
from models_registry.nn.training import train_module
from models_registry.services import model_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [3], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


class WeightAveraging(StrategyBase):
    name = "weight-averaging"
    label = "Weight averaging"
    order = 50
    objective = "score"
    description = "Average the active weights with a briefly fine-tuned copy (a toy plugin)."
    hormones = HormoneWeighting(raised_by={"serotonin": 2.0})

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        if metrics.score is not None and metrics.score < 0.95:
            return Applicability(True, f"score {metrics.score:.4f} < 0.95", urgency=0.3)
        return Applicability(False, "good enough")

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        tuned = clone_module(context.module)
        train_module(tuned, context.data, output_kind=context.output_kind,
                     config=train_config(context, epochs=5, max_seconds=min(3.0, context.time_budget_s)))
        averaged = clone_module(context.module)
        with torch.no_grad():
            for mine, theirs in zip(averaged.state_dict().values(), tuned.state_dict().values(), strict=True):
                if mine.dtype.is_floating_point:
                    mine.copy_((mine + theirs) / 2)
        progress(1.0, "averaged", None)
        return [Candidate(genome=context.genome, module=averaged, note="weights averaged with a fine-tuned copy")]


@pytest.fixture
def toy():
    assert "weight-averaging" not in strategy_names()
    with registered(WeightAveraging) as strategy:
        yield strategy
    assert "weight-averaging" not in strategy_names(), "the toy strategy outlived its test"


@pytest.fixture
def weak_model():
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 5})
    model = model_create(task=csv_task(n=300, seed=3), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    return model


def test_the_registry_lists_it_with_its_label_in_trigger_order(toy):
    assert list(all_strategies())[-1] == "weight-averaging"
    assert ("weight-averaging", "Weight averaging") in strategy_choices()


def test_the_database_field_accepts_it_and_still_refuses_unknown_names(toy, weak_model):
    ImprovementRun(model=weak_model, strategy="weight-averaging").full_clean()
    with pytest.raises(ValidationError, match="strategy"):
        ImprovementRun(model=weak_model, strategy="telepathy").full_clean()


def test_hormone_priorities_include_it(toy):
    calm = strategy_weights({"serotonin": 0.0}, strategy_weightings())
    serene = strategy_weights({"serotonin": 1.0}, strategy_weightings())
    assert calm["weight-averaging"] == 1.0 and serene["weight-averaging"] == 3.0
    assert serene["training"] == calm["training"]  # the others are untouched


def test_the_predictor_gets_a_feature_for_it(toy, weak_model):
    assert "strategy_weight-averaging" in run_feature_names()
    features = run_features(model=weak_model, strategy="weight-averaging")
    assert features["strategy_weight-averaging"] == 1.0 and features["strategy_training"] == 0.0


def test_the_cycle_proposes_it_when_its_trigger_fires(toy, weak_model):
    proposals = proposals_collect(ImprovementConfig.load(), {})
    mine = [p for p in proposals if p.strategy == "weight-averaging"]
    assert len(mine) == 1 and mine[0].kind == "trigger" and "< 0.95" in mine[0].reason


def test_the_api_queues_it(toy, weak_model, operator):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    response = client.post("/api/runs", {"model": weak_model.pk, "strategy": "weight-averaging"}, format="json")
    assert response.status_code == 201, response.json()
    assert ImprovementRun.objects.get(pk=response.json()["id"]).strategy == "weight-averaging"
    listed = client.get("/api/strategies").json()
    assert "weight-averaging" in [s["name"] for s in listed]


def test_the_cli_runs_it_end_to_end(toy, weak_model):
    out = io.StringIO()
    call_command("improve", f"{weak_model.task.slug}/weak", "--strategy", "weight-averaging", "--budget", "5",
                 stdout=out)
    run = ImprovementRun.objects.get(strategy="weight-averaging")
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED), run.error
    assert run.objective == "score" and run.candidate_metrics.get("score") is not None
    assert f"status: {run.status}" in out.getvalue()


def test_without_it_the_four_built_in_strategies_remain():
    assert strategy_names() == ("training", "optimization", "architecture", "distillation")
