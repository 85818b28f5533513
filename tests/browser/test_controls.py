"""The panel's controls in a real browser, with JavaScript on (the asynchronous path) and off (the
plain form post): each one's effect is checked through the REST API, not only its message.

With JavaScript on, the loop's Stop/Start form once posted to ``/[object HTMLInputElement]`` (its
hidden ``action`` field shadowed ``form.action``), answered 404 and left the loop running; only
the no-JavaScript path had been tested."""

from __future__ import annotations

import pytest

from improvement.models import CycleRecord, LoopState
from tests.browser.conftest import login, wait_api

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _loop_running(page) -> bool:
    response = page.request.get("/api/status")
    assert response.ok, response.status
    return response.json()["loop"]["running"]


def test_stop_start_and_force_a_cycle(any_page, operator):
    page = any_page
    LoopState.objects.update_or_create(pk=1, defaults={"running": True})
    login(page, "alice", "alice-pass-123")
    page.goto("/")
    assert _loop_running(page)

    page.click('[data-control="loop-stop"]')
    wait_api(page, lambda: not _loop_running(page), "the loop stopped")
    if page.js:  # the strip is redrawn in place with the other control
        page.wait_for_selector('[data-control="loop-start"]')
    else:
        page.wait_for_load_state()
        page.goto("/")
    page.click('[data-control="loop-start"]')
    wait_api(page, lambda: _loop_running(page), "the loop started again")

    def last_cycle() -> dict | None:
        return page.request.get("/api/status").json()["last_cycle"]

    before = last_cycle()
    page.goto("/")
    page.click('[data-control="force-cycle"]')
    wait_api(page, lambda: (last_cycle() or {}).get("id") != (before or {}).get("id")
             and last_cycle()["trigger"] == CycleRecord.Trigger.FORCED, "a forced cycle recorded")
    assert page.errors == []
