"""The concurrency limit holds across real worker processes (qcluster), checked over real runs."""

from __future__ import annotations

import time

import pytest

from improvement.choices import FINISHED, RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_create
from models_registry.services import model_create
from tests.factories import csv_task, trained_version
from tests.workers import qcluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


@pytest.mark.parametrize(("workers", "limit", "runs"), [(2, 2, 4), (3, 2, 5)])
def test_never_more_running_than_the_limit(workers, limit, runs, tmp_path):
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"max_concurrent_improvements": limit,
                                                               "run_time_budget_s": 4})
    task = csv_task(n=300)
    models = []
    for i in range(runs):
        model = model_create(task=task, name=f"m{i}")
        trained_version(model, genome=WEAK, epochs=1)
        models.append(model)
    for model in models:
        run_create(model=model, strategy="training", params={"time_budget_s": 3, "epochs": 30})
    peak, seen_running = 0, set()
    with qcluster(workers=workers, log_path=tmp_path / "qcluster.log"):
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            running = list(ImprovementRun.objects.filter(status=RunStatus.RUNNING).values_list("id", flat=True))
            peak = max(peak, len(running))
            seen_running.update(running)
            if ImprovementRun.objects.filter(status__in=FINISHED).count() == runs:
                break
            time.sleep(0.05)
    log = (tmp_path / "qcluster.log").read_text(errors="replace")[-3000:]
    statuses = list(ImprovementRun.objects.values_list("status", flat=True))
    assert all(s in (RunStatus.PROMOTED, RunStatus.REJECTED) for s in statuses), (statuses, log)
    assert peak <= limit, f"{peak} runs were running at once with a limit of {limit}"
    assert peak >= 1 and len(seen_running) >= 1
    workers_used = set(ImprovementRun.objects.values_list("worker", flat=True))
    assert len(workers_used) >= min(workers, 2), workers_used
