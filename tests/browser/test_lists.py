"""The run list in a real browser: filter it with its form, then watch a run change status without a reload."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from improvement.choices import RunOrigin, RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_claim, run_create, run_finish
from tests.browser.conftest import SCREENSHOTS, login, wait_live
from tests.browser.seed import panel_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_filter_runs_by_status_and_see_a_status_change_live(page, viewer):
    history = panel_history()
    model = history["model"]
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"max_concurrent_improvements": 4})
    queued = [ImprovementRun.objects.create(model=model, strategy=strategy, origin=RunOrigin.LOOP,
                                            trigger_reason=f"[trigger] queued {strategy}")
              for strategy in ("training", "optimization", "distillation")]

    login(page, "bob", "bob-pass-123")
    page.click('header nav a[href="/runs/"]')
    page.wait_for_url("**/runs/")
    assert page.locator("#runs-table [data-run-row]").count() == ImprovementRun.objects.count()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "runs.png"), full_page=True)

    # Filter with the form: only queued runs remain, and the filter is in the link.
    page.select_option("#id_status", "queued")
    page.click('[data-control="filter"]')
    page.wait_for_url("**/runs/?*")
    assert parse_qs(urlparse(page.url).query)["status"] == ["queued"]
    rows = page.locator("#runs-table [data-run-row]")
    expected = {str(r.pk) for r in ImprovementRun.objects.filter(status=RunStatus.QUEUED)}
    assert {rows.nth(i).get_attribute("data-run-row") for i in range(rows.count())} == expected
    assert set(page.locator("#runs-table [data-run-status]").all_inner_texts()) == {"queued"}
    wait_live(page)
    page.evaluate("() => { window.__sameDocument = true; }")

    # A worker claims one run (queued → running), as the app does: its row follows without a reload.
    run = queued[0]
    assert run_claim(run_id=run.pk, worker="browser-test:1") == "claimed"
    row = f'#runs-table [data-run-row="{run.pk}"]'
    page.wait_for_function(f"""() => document.querySelector('{row} [data-run-status]').textContent === 'running'
                                      && document.querySelector('{row}').classList.contains('stale')""")
    assert "no longer matches" in page.get_attribute(row, "title")

    # It ends: the row gets the decision and the gain.
    assert run_finish(run_id=run.pk, status=RunStatus.REJECTED, decision="rejected: gain -1.2 % short of 5 %",
                      gain=-0.012)
    page.wait_for_function(f"() => document.querySelector('{row} [data-run-status]').textContent === 'rejected'")
    assert page.inner_text(f"{row} [data-run-gain]") == "-1.2 %"
    assert page.inner_text(f"{row} [data-run-decision]") == "gain -1.2 % short of 5 %"

    # A new queued run matches the filter: a notice offers it rather than moving the rows.
    created = run_create(model=model, strategy="training", origin=RunOrigin.OPERATOR, enqueue=False, features={})
    page.locator("#runs-new").wait_for(state="visible")
    assert page.inner_text("#runs-new [data-new-runs]") == "1"
    assert page.locator(f'#runs-table [data-run-row="{created.pk}"]').count() == 0
    assert page.evaluate("() => window.__sameDocument") is True
    page.click("#runs-new a")
    page.locator(f'#runs-table [data-run-row="{created.pk}"]').wait_for()
    assert page.locator(f'#runs-table [data-run-row="{run.pk}"]').count() == 0  # rejected now: filtered out
    assert page.errors == []
