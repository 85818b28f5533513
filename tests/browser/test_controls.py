"""The panel's controls in a real browser, with JavaScript on (the asynchronous path) and off (the
plain form post): each one's effect is checked through the REST API, not only its message.

With JavaScript on, the loop's Stop/Start form once posted to ``/[object HTMLInputElement]`` (its
hidden ``action`` field shadowed ``form.action``), answered 404 and left the loop running; only
the no-JavaScript path had been tested."""

from __future__ import annotations

import pytest

from improvement.models import CycleRecord, LoopState
from tests.browser.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["js", "no-js"])
def any_page(request, browser, live_url):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_url,
                                  java_script_enabled=request.param == "js")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.js = request.param == "js"
    yield page
    context.close()


def _loop_running(page) -> bool:
    response = page.request.get("/api/status")
    assert response.ok, response.status
    return response.json()["loop"]["running"]


def _wait_api(page, predicate, what: str) -> None:
    """Poll the API (through the page's own session) until ``predicate`` holds; 30 s deadline."""
    for _ in range(120):
        if predicate():
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"{what}: not seen through the API within 30 s")


def test_stop_start_and_force_a_cycle(any_page, operator):
    page = any_page
    LoopState.objects.update_or_create(pk=1, defaults={"running": True})
    login(page, "alice", "alice-pass-123")
    page.goto("/")
    assert _loop_running(page)

    page.click('[data-control="loop-stop"]')
    _wait_api(page, lambda: not _loop_running(page), "the loop stopped")
    if page.js:  # the strip is redrawn in place with the other control
        page.wait_for_selector('[data-control="loop-start"]')
    else:
        page.wait_for_load_state()
        page.goto("/")
    page.click('[data-control="loop-start"]')
    _wait_api(page, lambda: _loop_running(page), "the loop started again")

    def last_cycle() -> dict | None:
        return page.request.get("/api/status").json()["last_cycle"]

    before = last_cycle()
    page.goto("/")
    page.click('[data-control="force-cycle"]')
    _wait_api(page, lambda: (last_cycle() or {}).get("id") != (before or {}).get("id")
              and last_cycle()["trigger"] == CycleRecord.Trigger.FORCED, "a forced cycle recorded")
    assert page.errors == []
