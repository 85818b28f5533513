"""The overview's Models tile and Models table change together on a live event, without a reload."""

from __future__ import annotations

import pytest

from models_registry.services import model_create
from tests.browser.conftest import login, wait_charts, wait_live
from tests.browser.seed import panel_history, version_made

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COUNTS = """() => ({ tile: parseInt(document.querySelector('[data-count="models"]').textContent, 10),
                     rows: document.querySelectorAll('#models tbody tr:not(.empty)').length })"""


def test_a_new_model_reaches_the_tile_and_the_table_live(page, operator):
    history = panel_history()
    login(page, "alice", "alice-pass-123")
    wait_charts(page)
    wait_live(page)
    page.evaluate("() => { window.__sameDocument = true; }")
    assert page.evaluate(COUNTS) == {"tile": 1, "rows": 1}

    other = model_create(task=history["task"], name="wider")
    version_made(other, score=0.6, latency_ms=0.1, hidden=[4])  # activates it: a version.activated event

    page.wait_for_function(f"() => ({COUNTS})().rows === 2")
    page.wait_for_function(f"() => ({COUNTS})().tile === 2")
    assert page.evaluate(COUNTS) == {"tile": 2, "rows": 2}
    assert page.evaluate("() => window.__sameDocument") is True  # updated in place
    assert page.errors == []
