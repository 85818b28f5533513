"""One architecture search shared by two worker clusters (as on two machines): both train some of
its trials, the run ends the way a single worker's does (a decision, a valid genome), and the
model's Optuna study lives in PostgreSQL with every trial of both runs."""

from __future__ import annotations

import pytest

from improvement.choices import RunStatus
from improvement.models import ImprovementRun, SearchCandidate
from improvement.runs.lifecycle import run_create
from improvement.runs.search import optuna_storage_url, study_for, study_storages_close
from models_registry.nn.genome import build_module, validate_genome
from tests.distributed.services import cluster_ready, wait_for
from tests.workers import qcluster

pytestmark = [pytest.mark.distributed, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

# 6 trials of at most ~6 s each (their share of the budget), asked two at a time: long enough that
# an idle worker claims some of them while the search's own worker trains another.
SEARCH = {"trials": 6, "parallel": 2, "time_budget_s": 40}


def _search(model) -> ImprovementRun:
    run = run_create(model=model, strategy="architecture", params=SEARCH)
    wait_for(lambda: run.refresh_from_db() or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING),
             timeout_s=240, interval_s=0.5, what=f"architecture run #{run.pk}")
    return run


def _outcome(run: ImprovementRun) -> dict:
    candidates = list(run.search_candidates.all())
    genome = run.result_version.genome if run.status == RunStatus.PROMOTED else run.candidate_metrics.get("genome")
    build_module(validate_genome(genome))
    return {
        "status": run.status, "decided": bool(run.decision), "candidates": len(candidates),
        "trained": sum(c.status == SearchCandidate.Status.DONE for c in candidates),
        "workers": {c.worker for c in candidates if c.worker},
        "by_worker": {w: sum(c.worker == w for c in candidates) for w in {c.worker for c in candidates}},
    }


def test_two_workers_share_one_search_and_agree_with_one(weak_model, fast_loop, tmp_path):
    alone_model, shared_model = weak_model("alone"), weak_model("shared")
    with qcluster(workers=1, log_path=tmp_path / "first.log"):
        cluster_ready(tmp_path / "first.log")
        alone = _outcome(_search(alone_model))
        with qcluster(workers=1, log_path=tmp_path / "second.log"):
            cluster_ready(tmp_path / "second.log")
            shared = _outcome(_search(shared_model))

    log = (tmp_path / "first.log").read_text(errors="replace")[-2000:]
    for outcome in (alone, shared):
        assert outcome["status"] in (RunStatus.PROMOTED, RunStatus.REJECTED), (outcome, log)
        assert outcome["decided"]
        assert 2 <= outcome["candidates"] <= SEARCH["trials"] and outcome["trained"] == outcome["candidates"], outcome
    assert len(alone["workers"]) == 1
    assert len(shared["workers"]) == 2, f"one worker did all of it: {shared['by_worker']}"
    assert all(count >= 1 for count in shared["by_worker"].values())
    pids = {worker.rsplit(":", 1)[1] for worker in shared["workers"]}
    assert len(pids) == 2, "two distinct worker processes"


@pytest.fixture
def own_study_storage():
    """This test opens the study in the test process too: its storage's pooled PostgreSQL sessions
    are closed afterwards (pytest cannot drop a test database that still has sessions)."""
    yield
    study_storages_close()


@pytest.mark.usefixtures("own_study_storage")
def test_the_study_lives_in_postgresql_and_a_later_run_continues_it(weak_model, fast_loop, tmp_path):
    model = weak_model("continued")
    with qcluster(workers=1, log_path=tmp_path / "worker.log"):
        cluster_ready(tmp_path / "worker.log")
        first = _search(model)
        second = _search(model)
    assert optuna_storage_url().startswith("postgresql+psycopg://")
    study = study_for(first, ("score",))
    numbers = sorted(t.number for t in study.trials if t.state.is_finished())
    first_trials = sorted(first.search_candidates.values_list("trial_number", flat=True))
    second_trials = sorted(second.search_candidates.values_list("trial_number", flat=True))
    assert first_trials and second_trials
    assert set(first_trials) | set(second_trials) <= set(numbers), "one study holds both runs' trials"
    assert min(second_trials) > max(first_trials), "the second run continued the first one's study"
    assert study.study_name == study_for(second, ("score",)).study_name
