"""Live updates in a real browser: a forced cycle's run shows up and advances; a dropped socket loses nothing."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from events.payloads import CycleFinishedPayload
from events.publisher import publish
from improvement.models import ImprovementConfig, ImprovementRun
from models_registry.services import model_create
from tests.browser.conftest import login, wait_charts, wait_live
from tests.factories import csv_task, trained_version
from tests.workers import qcluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


def test_forced_cycle_shows_a_run_and_its_progress_without_reload(page, operator, tmp_path):
    # A tiny task and a weak model: the training trigger fires; big enough to train for a few seconds.
    ImprovementConfig.objects.update_or_create(pk=1, defaults={
        "hormone_driven": False, "genetic_enhanced": False, "run_time_budget_s": 5.0,
        "max_concurrent_improvements": 1,
    })
    task = csv_task("tiny", n=8000)
    model = model_create(task=task, name="weak")
    trained_version(model, genome=WEAK, epochs=1)

    with qcluster(workers=1, log_path=tmp_path / "qcluster.log", REDIS_URL=""):
        login(page, "alice", "alice-pass-123")
        wait_charts(page)
        wait_live(page)
        page.evaluate("""() => {
            window.__sameDocument = true;
            window.__bars = [];
            window.plasticityLive.on("run.progress", (m) => {
                const bar = document.querySelector(`#in-flight [data-run-progress="${m.payload.run_id}"]`);
                window.__bars.push([m.payload.run_id, bar ? bar.value : null, m.payload.message]);
            });
        }""")
        assert page.locator("#in-flight [data-run-row]").count() == 0
        page.click('[data-control="force-cycle"]')
        toast = page.locator("#toast")
        toast.wait_for(state="visible", timeout=30_000)
        assert "error" not in (toast.get_attribute("class") or ""), f"forcing a cycle failed: {toast.text_content()}"
        row = page.locator("#in-flight [data-run-row]")
        row.first.wait_for(timeout=30_000)
        run = ImprovementRun.objects.get(model=model)
        assert row.first.get_attribute("data-run-row") == str(run.pk)
        # The bar moves as the worker reports (events relayed from the worker's outbox rows).
        page.wait_for_function(
            f"""() => window.__bars.filter(b => b[0] === {run.pk} && b[1] !== null && b[1] > 0)
                       .map(b => b[1]).some((v, i, all) => i > 0 && v > all[0])""",
            timeout=90_000,
        )
        bars = [b[1] for b in page.evaluate("() => window.__bars") if b[0] == run.pk and b[1] is not None]
        assert max(bars) > min(b for b in bars if b > 0)
        assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
        # The run ends; the in-flight table empties and the finished table lists it, still without reload.
        page.wait_for_selector(f'#finished a[href="/runs/{run.pk}/"]', timeout=120_000)
        assert page.evaluate("() => window.__sameDocument") is True
    run.refresh_from_db()
    assert run.status in ("promoted", "rejected"), (run.status, run.error,
                                                    (tmp_path / "qcluster.log").read_text(errors="replace")[-2000:])
    assert page.errors == []


def _publish(n: int, tag: str) -> list[int]:
    ids = []
    for i in range(n):
        with transaction.atomic():
            ids.append(publish("cycle.finished", CycleFinishedPayload(cycle_id=i, trigger=tag, enqueued=0, slots=0,
                                                                       next_cycle_at=None)).id)
    return ids


def test_dropping_and_restoring_the_websocket_loses_no_event(page, viewer):
    blocked = {"on": False}
    routes = []

    def route(ws):
        if blocked["on"]:
            ws.close(code=1006)
            return
        routes.append(ws)
        ws.connect_to_server()

    page.route_web_socket("**/ws/live/**", route)
    login(page, "bob", "bob-pass-123")
    wait_live(page)
    start = page.evaluate("() => window.plasticityLive.lastId")

    before = _publish(3, "before")
    page.wait_for_function(f"() => window.plasticityLive.seen.has({before[-1]})")

    # The network drops: the open socket closes and reconnecting fails until it is back.
    blocked["on"] = True
    for ws in routes:
        ws.close(code=1006)
    page.wait_for_function("() => !window.plasticityLive.connected")
    during = _publish(10, "during")
    time.sleep(1.0)
    seen = set(page.evaluate("() => window.plasticityLive.receivedIds"))
    assert not seen & set(during), "events arrived while the socket was down"

    blocked["on"] = False
    page.wait_for_function(f"() => window.plasticityLive.seen.has({during[-1]})", timeout=20_000)
    wait_live(page)
    after = _publish(3, "after")
    page.wait_for_function(f"() => window.plasticityLive.seen.has({after[-1]})")

    received = page.evaluate("() => window.plasticityLive.receivedIds")
    mine = [i for i in received if i >= before[0]]
    assert len(mine) == len(set(mine)), "an event was handled twice"
    assert sorted(mine) == list(range(before[0], after[-1] + 1)), "the ids are not contiguous"
    assert set(before + during + after) <= set(mine)
    assert all(i > start for i in mine)
    assert page.evaluate("() => window.plasticityLive.connects") >= 2
