"""manage.py improve: one improvement in the foreground with a before/after table."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from improvement.models import ImprovementConfig, ImprovementRun
from models_registry.services import model_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


def test_improve_runs_one_strategy_and_prints_before_and_after():
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 5})
    model = model_create(task=csv_task(n=300, seed=3), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    out = io.StringIO()
    call_command("improve", f"{model.task.slug}/weak", "--strategy", "training", "--budget", "5", stdout=out)
    text = out.getvalue()
    run = ImprovementRun.objects.get()
    assert run.origin == "cli" and run.status in ("promoted", "rejected")
    assert "metric" in text and "before" in text and "after" in text and "score" in text
    assert f"status: {run.status}" in text
    assert "%" in text  # the progress bar


def test_improve_without_strategy_uses_the_trigger_and_unknown_models_are_refused():
    model = model_create(task=csv_task(n=300, seed=3), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    with pytest.raises(CommandError, match="no model"):
        call_command("improve", "nope/nothing", stdout=io.StringIO())
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 5})
    out = io.StringIO()
    call_command("improve", f"{model.task.slug}/weak", "--budget", "5", stdout=out)
    assert ImprovementRun.objects.get().strategy == "training"
