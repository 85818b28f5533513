"""``max_concurrent_improvements`` holds across worker clusters on PostgreSQL: with more worker
processes than slots and six queued runs, the database never shows more runs running than the
limit, and every run still finishes."""

from __future__ import annotations

import time

import pytest

from improvement.choices import FINISHED, RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_create
from tests.distributed.services import cluster_ready
from tests.workers import qcluster

pytestmark = [pytest.mark.distributed, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

# Each run trains until its budget is spent (no epoch or patience stop first), so six runs on four
# worker processes must overlap: the limit is reached by construction, not by sampling luck. The
# product's clusters prefetch at most one task each (``Q_QUEUE_LIMIT``): with django-q2's default
# prefetch (workers²) one cluster took all six deliveries and ran only two at a time.
SHORT = {"time_budget_s": 6, "epochs": 100_000, "patience": 100_000}


@pytest.mark.parametrize(("processes_each", "limit"), [(1, 1), (2, 3)], ids=["2x1-workers-limit-1", "2x2-workers-limit-3"])
def test_the_limit_holds_across_two_clusters(processes_each, limit, weak_model, fast_loop, tmp_path):
    ImprovementConfig.objects.filter(pk=1).update(max_concurrent_improvements=limit)
    models = [weak_model(f"m{i}") for i in range(6)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    peak, samples = 0, 0
    with qcluster(workers=processes_each, log_path=logs[0]), qcluster(workers=processes_each, log_path=logs[1]):
        for log in logs:
            cluster_ready(log)
        runs = [run_create(model=model, strategy="training", params=SHORT) for model in models]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            peak = max(peak, ImprovementRun.objects.filter(status=RunStatus.RUNNING).count())
            samples += 1
            if ImprovementRun.objects.filter(pk__in=[r.pk for r in runs], status__in=FINISHED).count() == len(runs):
                break
            time.sleep(0.02)

    tail = "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
    statuses = list(ImprovementRun.objects.values_list("status", flat=True))
    assert all(s in (RunStatus.PROMOTED, RunStatus.REJECTED) for s in statuses), (statuses, tail)
    assert peak <= limit, f"{peak} runs were running at once with a limit of {limit}"
    assert peak == limit, f"the slots were not used ({peak} of {limit}, {samples} samples)"
    workers = set(ImprovementRun.objects.values_list("worker", flat=True))
    assert len(workers) >= 2, f"runs executed by {workers}"
