"""PostgreSQL stops and starts again: the web process answers 503 meanwhile and recovers, and so do
the workers, without a restart of either; a run training through the outage still finishes."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_create
from tests.distributed.services import http_get, postgres_stopped, session_cookie, wait_for
from tests.workers import daphne, qcluster

pytestmark = [pytest.mark.distributed, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

LONG = {"time_budget_s": 30, "epochs": 100_000, "patience": 100_000}
SHORT = {"time_budget_s": 3, "epochs": 30}


def _finished(run: ImprovementRun) -> bool:
    run.refresh_from_db()
    return run.status not in (RunStatus.QUEUED, RunStatus.RUNNING)


def test_requests_get_503_during_an_outage_and_everything_recovers(operator, weak_model, fast_loop, tmp_path):
    api = {"Authorization": f"Token {Token.objects.create(user=operator).key}", "Accept": "application/json"}
    page = {"Cookie": session_cookie(operator), "Accept": "text/html"}
    with qcluster(workers=1, log_path=tmp_path / "qcluster.log") as cluster, \
            daphne(log_path=tmp_path / "daphne.log") as (url, web):
        assert http_get(f"{url}/api/status", headers=api).status == 200
        assert http_get(f"{url}/", headers=page).status == 200
        in_flight = run_create(model=weak_model(), strategy="training", params=LONG)
        wait_for(lambda: ImprovementRun.objects.filter(pk=in_flight.pk, status=RunStatus.RUNNING,
                                                       progress__gte=0.1).exists(),
                 timeout_s=90, what="a run training")

        with postgres_stopped():
            during = {"api": http_get(f"{url}/api/status", headers=api),
                      "page": http_get(f"{url}/", headers=page),
                      "health": http_get(f"{url}/healthz")}

        for name, answer in during.items():
            assert answer.status == 503, (name, answer.status, answer.body[:300])
        assert during["api"].headers["retry-after"].isdigit()
        assert during["api"].json()["error"]["code"] == "database_unavailable"
        assert during["page"].headers["retry-after"].isdigit()
        assert during["page"].headers["content-type"].startswith("text/html")

        # The same web process answers again, on fresh connections.
        wait_for(lambda: http_get(f"{url}/api/status", headers=api).status == 200, timeout_s=60,
                 what="the API answering 200 again")
        for _ in range(5):
            assert http_get(f"{url}/api/status", headers=api).status == 200
            assert http_get(f"{url}/", headers=page).status == 200
            assert http_get(f"{url}/healthz").status == 200

        # The same workers take new work: a run queued after the restart finishes.
        after = run_create(model=weak_model(), strategy="training", params=SHORT)
        wait_for(lambda: _finished(after), timeout_s=120, interval_s=0.5, what="the run queued after the restart")
        # The run that was training through the outage kept going and finished normally.
        wait_for(lambda: _finished(in_flight), timeout_s=120, interval_s=0.5, what="the run trained through it")
        assert cluster.poll() is None and web.poll() is None, "no process was restarted"

    log = (tmp_path / "qcluster.log").read_text(errors="replace")[-4000:]
    assert after.status in (RunStatus.PROMOTED, RunStatus.REJECTED), (after.status, after.error, log)
    assert in_flight.status in (RunStatus.PROMOTED, RunStatus.REJECTED), (in_flight.status, in_flight.error, log)
    assert in_flight.attempts == 1, "it was not retried: it survived"
