"""Redis restarts (its data lost) while a run trains: the run is not disturbed, the web process drops
its WebSockets, and a client that reconnects with ``?after=<last id>`` gets every event it
missed and then live ones again."""

from __future__ import annotations

import time

import pytest

from events.models import OutboxEvent
from events.publisher import latest_event_id
from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_create
from tests.distributed.services import LiveClient, redis_restart, session_cookie
from tests.workers import daphne, qcluster

pytestmark = [pytest.mark.distributed, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

LONG = {"time_budget_s": 20, "epochs": 100_000, "patience": 100_000}


def _progress_of(run: ImprovementRun):
    return lambda client: sum(m.get("type") == "run.progress" and m["payload"].get("run_id") == run.pk
                              for m in client.messages)


def test_live_clients_catch_up_after_a_redis_restart(operator, weak_model, fast_loop, tmp_path):
    model = weak_model()
    with qcluster(workers=1, log_path=tmp_path / "qcluster.log"), \
            daphne(log_path=tmp_path / "daphne.log") as (url, _web):
        client = LiveClient(url, session_cookie(operator), after=latest_event_id())
        client.connect()
        run = run_create(model=model, strategy="training", params=LONG)
        client.pump_until(lambda c: _progress_of(run)(c) >= 3, timeout_s=90, what="live progress of the run")
        assert client.drops == 0

        redis_restart()
        restarted_at = time.time()
        # The consumer's Redis connection broke: the server closes the socket (the browser's cue
        # to reconnect), and the client comes back asking for everything after its last id.
        client.pump_until(lambda c: c.drops >= 1 and c._socket is not None, timeout_s=45,
                          what="the server dropping the WebSocket and the client reconnecting")
        connection_after = client.connections
        client.pump_until(
            lambda c: any(m.get("type") == "run.finished" and m["payload"].get("run_id") == run.pk
                          for m in c.messages),
            timeout_s=120, what="the run's end")
        client.close()

    run.refresh_from_db()
    log = (tmp_path / "qcluster.log").read_text(errors="replace")[-3000:]
    # Publishing never failed the state change it announced.
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED), (run.status, run.error, log)

    ids = client.ids
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    expected = set(OutboxEvent.objects.filter(id__gte=min(ids), id__lte=max(ids)).values_list("id", flat=True))
    assert set(ids) == expected, f"missed {sorted(expected - set(ids))[:20]}"
    assert sorted(ids) == list(range(min(ids), max(ids) + 1)), "event ids are contiguous"
    # Live updates resumed: events published after the reconnect arrived on the new connection.
    live_after = [m for m in client.messages
                  if m["_connection"] >= connection_after and m["type"] == "run.progress"
                  and m["payload"].get("run_id") == run.pk and m["_received"] > restarted_at]
    assert len(live_after) >= 3, f"{len(live_after)} progress events after the restart"
