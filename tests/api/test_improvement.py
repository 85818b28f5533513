"""Runs, strategies, configuration, loop control, reports and hormones over the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hormones.services import brain_state_snapshot, hormone_release
from improvement.api.serializers import RunDetailSerializer
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_create
from models_registry.services import model_create
from tests.factories import csv_task, model_with_versions

pytestmark = pytest.mark.django_db


@pytest.fixture
def model():
    model, _ = model_with_versions(1)
    return model


# ------------------------------------------------------------------------------------- runs


def test_operator_runs_a_strategy_now(alice, operator, model):
    response = alice.post("/api/runs", {"model": model.pk, "strategy": "training",
                                        "params": {"epochs": 5, "time_budget_s": 10}}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["origin"] == "operator" and body["requested_by"] == "alice"
    run = ImprovementRun.objects.get(pk=body["id"])
    assert run.params == {"epochs": 5, "time_budget_s": 10.0} and run.requested_by == operator
    assert run.trigger_reason == "requested by alice (API)"


def test_run_budgets_stay_below_the_worker_timeout(alice, model, settings):
    """A budget the worker's own timeout would cut short is refused, in a run and in the config."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 3600}
    too_long = alice.post("/api/runs", {"model": model.pk, "strategy": "training",
                                        "params": {"time_budget_s": 3500}}, format="json")
    assert too_long.status_code == 400
    message = too_long.json()["error"]["message"]
    assert "at most 3240 s" in message and "Q_TIMEOUT" in message
    assert alice.post("/api/runs", {"model": model.pk, "strategy": "training",
                                    "params": {"time_budget_s": 3240}}, format="json").status_code == 201
    config = alice.patch("/api/config", {"run_time_budget_s": 7200}, format="json")
    assert config.status_code == 400 and "Q_TIMEOUT" in config.json()["error"]["message"]
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 9000}  # a deployment that raised it
    assert alice.patch("/api/config", {"run_time_budget_s": 7200}, format="json").status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"strategy": "training"}, "model"),
        ({"model": 999999, "strategy": "training"}, "model"),
        ({"strategy": "dreaming"}, "strategy"),
        ({"strategy": "training", "params": {"epochs": 0}}, "params"),
        ({"strategy": "training", "params": {"timeout": 5}}, "params"),
        ({"strategy": "training", "params": "fast"}, "params"),
        ({"strategy": "distillation", "params": {"alpha": 1.5}}, "params"),
        ({"strategy": "distillation", "params": {"temperature": 0}}, "params"),
    ],
)
def test_run_requests_are_validated(alice, model, payload, field):
    payload = {"model": model.pk, **payload} if "model" not in payload and field != "model" else payload
    response = alice.post("/api/runs", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not ImprovementRun.objects.exists()


def test_a_model_without_an_active_version_cannot_be_improved(alice):
    empty = model_create(task=csv_task(n=80), name="empty")
    response = alice.post("/api/runs", {"model": empty.pk, "strategy": "training"}, format="json")
    assert response.status_code == 400
    assert "no active version" in response.json()["error"]["message"]


def test_cancel_queued_then_conflict(alice, model):
    run = run_create(model=model, strategy="training", enqueue=False)
    response = alice.post(f"/api/runs/{run.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    response = alice.post(f"/api/runs/{run.pk}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_cancel_running_requests_a_stop(alice, model):
    run = run_create(model=model, strategy="training", enqueue=False)
    ImprovementRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=timezone.now())
    response = alice.post(f"/api/runs/{run.pk}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True


def _runs(model, n: int = 4) -> list[ImprovementRun]:
    now = timezone.now()
    strategies = ["training", "optimization", "architecture", "distillation"]
    statuses = [RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED, RunStatus.QUEUED]
    runs = []
    for i in range(n):
        run = run_create(model=model, strategy=strategies[i % 4], enqueue=False)
        finished = now - timedelta(days=n - i) + timedelta(hours=1) if statuses[i % 4] != RunStatus.QUEUED else None
        ImprovementRun.objects.filter(pk=run.pk).update(
            status=statuses[i % 4], created_at=now - timedelta(days=n - i), finished_at=finished, gain=0.1 * i)
        runs.append(run)
    return runs


def test_runs_are_listed_newest_first_and_filtered(bob, model):
    runs = _runs(model)
    other = model_create(task=model.task, name="other")
    page = bob.get("/api/runs").json()
    assert [r["id"] for r in page["results"]] == [r.pk for r in reversed(runs)]

    def ids(**query) -> list[int]:
        response = bob.get("/api/runs", query)
        assert response.status_code == 200, response.content
        return sorted(r["id"] for r in response.json()["results"])

    assert ids(model=model.pk) == [r.pk for r in runs] and ids(model=other.pk) == []
    assert ids(task=model.task.slug) == [r.pk for r in runs] and ids(task="nope") == []
    assert ids(strategy="optimization") == [runs[1].pk]
    assert ids(status="promoted") == [runs[0].pk]
    two_days_ago = (timezone.now() - timedelta(days=2, hours=1)).isoformat()
    assert ids(created_after=two_days_ago) == [runs[2].pk, runs[3].pk]
    assert ids(created_before=two_days_ago) == [runs[0].pk, runs[1].pk]
    assert ids(finished_after=two_days_ago) == [runs[2].pk]
    assert ids(finished_before=two_days_ago) == [runs[0].pk, runs[1].pk]
    for bad in ({"created_after": "yesterday"}, {"status": "done"}, {"model": "x"}):
        response = bob.get("/api/runs", bad)
        assert response.status_code == 400 and response.json()["error"]["details"]


def test_run_detail_has_metrics_curve_and_log(bob, model):
    run = _runs(model, 1)[0]
    ImprovementRun.objects.filter(pk=run.pk).update(curve=[{"epoch": 1, "loss": 0.5}], log="hello",
                                                    candidate_metrics={"score": 0.9})
    body = bob.get(f"/api/runs/{run.pk}").json()
    assert body["log"] == "hello" and body["curve"][0]["loss"] == 0.5
    assert body["candidate_metrics"] == {"score": 0.9}


def test_non_finite_numbers_are_sent_as_null(model):
    """PostgreSQL stores NaN in float columns; JSON has no NaN, so the API sends null."""
    run = _runs(model, 1)[0]
    run.gain = float("nan")
    run.curve = [{"epoch": 1, "loss": float("inf")}]
    body = RunDetailSerializer(run).data
    assert body["gain"] is None and body["curve"] == [{"epoch": 1, "loss": None}]


def test_history_is_the_seeds_history_with_filters(bob, model):
    runs = _runs(model, 6)
    page = bob.get("/api/history", {"limit": 2}).json()
    assert page["count"] == 6 and [r["id"] for r in page["results"]] == [runs[5].pk, runs[4].pk]
    assert "offset=2" in page["next"]
    assert bob.get("/api/history").json()["count"] == 6  # limit 50 by default
    since = (timezone.now() - timedelta(days=2, hours=1)).isoformat()
    assert [r["id"] for r in bob.get("/api/history", {"since": since}).json()["results"]] == [runs[5].pk,
                                                                                                runs[4].pk]
    until = (timezone.now() - timedelta(days=5, hours=1)).isoformat()
    assert [r["id"] for r in bob.get("/api/history", {"until": until}).json()["results"]] == [runs[0].pk]
    assert bob.get("/api/history", {"strategy": "training", "status": "promoted"}).json()["count"] == 2


def test_strategies_are_listed(bob):
    body = bob.get("/api/strategies").json()
    assert [s["name"] for s in body][:4] == ["training", "optimization", "architecture", "distillation"]
    assert {s["objective"] for s in body} <= {"score", "latency", "size"}
    assert all(s["description"] for s in body)


# ---------------------------------------------------------------------------- configuration


def test_configuration_is_read_by_everyone_and_changed_by_operators(alice, bob):
    assert bob.get("/api/config").json()["max_concurrent_improvements"] == 3
    assert bob.patch("/api/config", {"improvement_interval": 60}, format="json").status_code == 403
    response = alice.patch("/api/config", {"improvement_interval": 60, "performance_threshold": 0.05},
                           format="json")
    assert response.status_code == 200 and response.json()["improvement_interval"] == 60
    config = ImprovementConfig.load()
    assert config.improvement_interval == 60 and config.performance_threshold == 0.05


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"improvement_interval": 0}, "improvement_interval"),
        ({"max_concurrent_improvements": 0}, "max_concurrent_improvements"),
        ({"performance_threshold": -0.1}, "performance_threshold"),
        ({"architecture_score_low": 0.9, "architecture_score_high": 0.8}, "architecture_score_low"),
        ({"improvement_interval": "often"}, "improvement_interval"),
    ],
)
def test_invalid_configuration_is_a_clear_400_and_changes_nothing(alice, change, field):
    before = ImprovementConfig.load()
    for method in ("patch", "put"):
        response = getattr(alice, method)("/api/config", change, format="json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert field in error["details"] and error["message"].startswith(field)
    after = ImprovementConfig.load()
    assert after.improvement_interval == before.improvement_interval
    assert after.max_concurrent_improvements == before.max_concurrent_improvements


# ------------------------------------------------------------------------- loop and reports


def test_loop_start_stop_and_forced_cycle(alice, model):
    response = alice.post("/api/loop/start")
    assert response.status_code == 200 and response.json()["running"] is True
    assert alice.get("/api/status").json()["loop"]["running"] is True
    response = alice.post("/api/loop/cycle")
    assert response.status_code == 200 and "decisions" in response.json()
    response = alice.post("/api/loop/stop")
    assert response.status_code == 200 and response.json()["running"] is False


def test_status_health_and_brain_state(bob, model):
    status = bob.get("/api/status").json()
    assert {"loop", "running", "queued", "last_cycle"} <= set(status)
    health = bob.get("/api/health")
    assert health.status_code == 200 and isinstance(health.json(), dict)
    assert bob.get("/api/brain-state").json() == {"latest": None, "history": []}
    for _ in range(3):
        brain_state_snapshot(queue_length=1, runs_in_flight=0, fleet_health=0.5)
    body = bob.get("/api/brain-state", {"limit": 2}).json()
    assert body["latest"]["queue_length"] == 1 and len(body["history"]) == 2
    assert bob.get("/api/brain-state", {"limit": -1}).status_code == 400


# ---------------------------------------------------------------------------------- hormones


def test_hormone_levels_and_events(bob):
    body = bob.get("/api/hormones").json()
    assert {h["name"] for h in body} == {"dopamine", "cortisol", "adrenaline", "serotonin", "oxytocin"}
    hormone_release(name="dopamine", delta=0.4, cause="promotion of blobs/m v2")
    hormone_release(name="cortisol", delta=0.2, cause="latency over budget")
    levels = {h["name"]: h for h in bob.get("/api/hormones").json()}
    assert levels["dopamine"]["level"] == pytest.approx(0.7, abs=1e-3) and levels["dopamine"]["baseline"] == 0.3
    events = bob.get("/api/hormones/events").json()
    assert events["count"] == 2 and events["results"][0]["hormone"] == "cortisol"
    assert bob.get("/api/hormones/events", {"hormone": "dopamine"}).json()["count"] == 1
    assert bob.get("/api/hormones/events", {"cause": "LATENCY"}).json()["count"] == 1
    assert bob.get("/api/hormones/events", {"limit": 1}).json()["next"]
    assert bob.get("/api/hormones/events", {"hormone": "melatonin"}).status_code == 400
