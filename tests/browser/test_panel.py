"""The control panel in a real browser: login, rendered charts, rollback, access rules, screenshots."""

from __future__ import annotations

import pytest

from improvement.models import ImprovementRun, LoopState
from models_registry.selectors import version_active
from tests.browser.conftest import SCREENSHOTS, login, wait_charts, wait_live
from tests.browser.seed import panel_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_overview_charts_and_screenshots(page, operator):
    history = panel_history()
    login(page, "alice", "alice-pass-123")
    assert page.url.endswith("/")
    wait_charts(page)
    wait_live(page)
    assert page.locator("#hormone-chart .main-svg").count() >= 1
    assert page.locator("#hormone-chart .scatterlayer .trace").count() >= 5  # one line per hormone
    assert page.locator(f'[data-run-progress="{history["running"].pk}"]').count() == 1
    assert page.locator('[data-control="force-cycle"]').is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let Plotly finish its transitions
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

    page.goto(f"/models/{history['model'].pk}/")
    wait_charts(page, 2)
    assert page.locator("#model-charts .js-plotly-plot").count() == 2
    assert page.locator("#versions tbody tr").count() == 6
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "model.png"), full_page=True)
    for path in ["/tasks/", "/hormones/", f"/runs/{history['runs'][-1].pk}/", "/config/"]:
        page.goto(path)
        if path != "/config/":
            wait_charts(page)
    assert page.errors == []


def test_model_page_rolls_back_a_version(page, operator):
    history = panel_history()
    model = history["model"]
    login(page, "alice", "alice-pass-123")
    page.goto(f"/models/{model.pk}/")
    wait_charts(page, 2)
    wait_live(page)
    page.evaluate("() => { window.__sameDocument = true; }")
    assert page.locator("[data-active-version]").get_attribute("data-active-version") == "6"
    page.click('[data-control="rollback"]')
    page.wait_for_function("() => document.querySelector('[data-active-version]').dataset.activeVersion === '4'")
    assert page.locator('tr.active-row').get_attribute("data-version") == "4"
    assert page.evaluate("() => window.__sameDocument") is True  # updated in place, no reload
    model.refresh_from_db()
    assert version_active(model=model).number == 4

    # Activate another one from the lineage table; the page follows again.
    page.click('tr[data-version="2"] [data-control="activate"]')
    page.wait_for_function("() => document.querySelector('[data-active-version]').dataset.activeVersion === '2'")
    model.refresh_from_db()
    assert version_active(model=model).number == 2
    wait_charts(page, 2)  # the charts were redrawn with the new active version
    assert page.errors == []


def test_viewer_sees_no_controls_and_forged_posts_are_refused(page, viewer):
    history = panel_history()
    model, running = history["model"], history["running"]
    login(page, "bob", "bob-pass-123")
    pages = ["/", "/tasks/", f"/models/{model.pk}/", f"/runs/{running.pk}/", "/hormones/", "/config/"]
    for path in pages:
        page.goto(path)
        assert page.locator("[data-control]").count() == 0, path
        assert page.locator("form[data-async]").count() == 0, path
    assert page.locator("#config-form fieldset[disabled]").count() == 2
    wait_live(page)  # viewers do get live updates

    # A forged control POST with a valid CSRF token (the logout form's) is refused with 403.
    controls = [
        (f"/models/{model.pk}/rollback", {}), (f"/models/{model.pk}/activate", {"version": history["versions"][0].pk}),
        (f"/runs/{running.pk}/cancel", {}), ("/config/cycle", {}), ("/config/loop", {"action": "start"}),
        ("/config/run", {"model": model.pk, "strategy": "training"}), ("/config/", {"improvement_interval": "5"}),
    ]
    statuses = page.evaluate("""async (controls) => {
        const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
        const out = [];
        for (const [url, fields] of controls) {
            const body = new FormData();
            body.append("csrfmiddlewaretoken", token);
            for (const [k, v] of Object.entries(fields)) body.append(k, v);
            const response = await fetch(url, {method: "POST", body, headers: {"X-CSRFToken": token}});
            out.push([url, response.status]);
        }
        return out;
    }""", [[url, {k: str(v) for k, v in fields.items()}] for url, fields in controls])
    assert all(status == 403 for _, status in statuses), statuses
    model.refresh_from_db()
    running.refresh_from_db()
    assert version_active(model=model).number == 6
    assert not running.cancel_requested
    assert not LoopState.load().running
    assert ImprovementRun.objects.count() == 7


def test_websocket_refuses_anonymous_users_and_foreign_origins(live_url, live_ws_url, operator):
    from django.test import Client
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    client = Client()
    client.force_login(operator)
    session = client.cookies["sessionid"].value
    ws_url = live_ws_url + "/ws/live/"
    good_origin = {"Origin": live_url}

    with connect(ws_url, additional_headers={**good_origin, "Cookie": f"sessionid={session}"}, open_timeout=10) as ws:
        ws.ping().wait(5)  # accepted: a logged-in user from the site's own origin
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, additional_headers=good_origin, open_timeout=10)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as foreign:
        connect(ws_url, additional_headers={"Origin": "http://evil.example", "Cookie": f"sessionid={session}"},
                open_timeout=10)
    assert foreign.value.response.status_code == 403


def test_every_asset_comes_from_the_server_itself(page, operator, live_url):
    """No CDN, no font service, no telemetry: each request the pages make goes to our own host."""
    from urllib.parse import urlsplit

    history = panel_history()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    login(page, "alice", "alice-pass-123")
    wait_charts(page)
    wait_live(page)
    for path in [f"/models/{history['model'].pk}/", "/tasks/", "/hormones/", "/config/", "/api/docs/"]:
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.wait_for_function("() => document.querySelector('.swagger-ui .info') !== null")
    own = urlsplit(live_url).netloc
    foreign = sorted({url for url in requests if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc != own})
    assert foreign == []
    assert any("/static/vendor/plotly" in url for url in requests)  # the charts' library came from us
    assert page.errors == []
