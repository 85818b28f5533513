"""Every panel page renders for an operator and a viewer; access rules hold on the server side.

Actors: alice (operator, staff), bob (viewer), an anonymous visitor.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from events.models import OutboxEvent
from improvement.choices import RunOrigin, RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, LoopState
from models_registry.selectors import version_active

pytestmark = pytest.mark.django_db


def page_urls(history) -> list[str]:
    return [
        reverse("overview"), reverse("panel:tasks"), reverse("panel:model", args=[history["model"].pk]),
        reverse("panel:run", args=[history["running"].pk]), reverse("panel:run", args=[history["runs"][0].pk]),
        reverse("panel:run", args=[history["rejected"].pk]), reverse("panel:hormones"),
        reverse("panel:hormones") + "?hours=1&hormone=dopamine", reverse("panel:config"),
    ]


def control_posts(history) -> list[tuple[str, dict]]:
    model, versions, running = history["model"], history["versions"], history["running"]
    return [
        (reverse("panel:model-rollback", args=[model.pk]), {}),
        (reverse("panel:model-activate", args=[model.pk]), {"version": versions[0].pk}),
        (reverse("panel:run-cancel", args=[running.pk]), {}),
        (reverse("panel:cycle"), {}),
        (reverse("panel:loop"), {"action": "start"}),
        (reverse("panel:run-now"), {"model": model.pk, "strategy": "training"}),
        (reverse("panel:config"), {"improvement_interval": "10", "max_concurrent_improvements": "2"}),
    ]


def test_every_page_renders_for_an_operator_with_controls(history, operator_client):
    for url in page_urls(history):
        response = operator_client.get(url)
        assert response.status_code == 200, url
        assert b"data-last-event-id" in response.content, url
    model_page = operator_client.get(reverse("panel:model", args=[history["model"].pk])).content.decode()
    assert 'data-control="rollback"' in model_page and 'data-control="activate"' in model_page
    assert 'data-control="force-cycle"' in operator_client.get("/").content.decode()
    run_page = operator_client.get(reverse("panel:run", args=[history["running"].pk])).content.decode()
    assert 'data-control="cancel"' in run_page


def test_every_page_renders_for_a_viewer_without_controls(history, viewer_client):
    for url in page_urls(history):
        response = viewer_client.get(url)
        assert response.status_code == 200, url
        assert b"data-control=" not in response.content, url
    config = viewer_client.get(reverse("panel:config")).content.decode()
    assert "<fieldset disabled>" in config


def test_anonymous_visitors_are_sent_to_the_login_page(history):
    client = Client()
    for url in page_urls(history):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url
    for url, data in control_posts(history):
        response = client.post(url, data)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_viewer_control_posts_are_refused_and_change_nothing(history, viewer_client):
    model = history["model"]
    before_runs, before_events = ImprovementRun.objects.count(), OutboxEvent.objects.count()
    for url, data in control_posts(history):
        response = viewer_client.post(url, data)
        assert response.status_code == 403, url
        response = viewer_client.post(url, data, HTTP_ACCEPT="application/json")
        assert response.status_code == 403, url
    model.refresh_from_db()
    assert version_active(model=model).number == 6
    assert ImprovementRun.objects.count() == before_runs
    assert OutboxEvent.objects.count() == before_events
    assert not LoopState.load().running
    assert ImprovementConfig.load().improvement_interval != 10
    history["running"].refresh_from_db()
    assert not history["running"].cancel_requested


def test_controls_need_a_csrf_token(history, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("panel:model-rollback", args=[history["model"].pk]))
    assert response.status_code == 403
    history["model"].refresh_from_db()
    assert version_active(model=history["model"]).number == 6


def test_controls_answer_get_with_405(history, operator_client):
    assert operator_client.get(reverse("panel:cycle")).status_code == 405


def test_operator_rolls_back_and_activates(history, operator_client):
    model = history["model"]
    url = reverse("panel:model", args=[model.pk])
    response = operator_client.post(reverse("panel:model-rollback", args=[model.pk]), {"next": url})
    assert response.status_code == 302 and response["Location"] == url
    model.refresh_from_db()
    assert version_active(model=model).number == 4  # v6's parent
    assert OutboxEvent.objects.filter(type="version.activated").exists()
    page = operator_client.get(url).content.decode()
    assert 'data-active-version="4"' in page

    response = operator_client.post(reverse("panel:model-activate", args=[model.pk]),
                                    {"version": history["versions"][1].pk}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response.json()["version"] == 2
    model.refresh_from_db()
    assert version_active(model=model).number == 2


def test_activate_refuses_a_version_of_another_model(history, operator_client):
    from models_registry.services import model_create
    from tests.browser.seed import version_made

    other = model_create(task=history["task"], name="other")
    foreign = version_made(other, score=0.5, latency_ms=0.1, hidden=[4])
    response = operator_client.post(reverse("panel:model-activate", args=[history["model"].pk]),
                                    {"version": foreign.pk}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    history["model"].refresh_from_db()
    assert version_active(model=history["model"]).number == 6


def test_operator_runs_a_strategy_now(history, operator_client, operator):
    response = operator_client.post(reverse("panel:run-now"),
                                    {"model": history["model"].pk, "strategy": "optimization"})
    run = ImprovementRun.objects.order_by("-id").first()
    assert response.status_code == 302 and response["Location"] == reverse("panel:run", args=[run.pk])
    assert (run.strategy, run.origin, run.requested_by, run.status) == (
        "optimization", RunOrigin.OPERATOR, operator, RunStatus.QUEUED)


def test_operator_cancels_a_running_run(history, operator_client):
    running = history["running"]
    response = operator_client.post(reverse("panel:run-cancel", args=[running.pk]), HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    running.refresh_from_db()
    assert running.cancel_requested


def test_operator_starts_and_stops_the_loop_and_forces_a_cycle(history, operator_client):
    assert operator_client.post(reverse("panel:loop"), {"action": "start"}).status_code == 302
    assert LoopState.load().running
    response = operator_client.post(reverse("panel:cycle"), HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and "cycle" in response.json()
    assert operator_client.post(reverse("panel:loop"), {"action": "stop"}).status_code == 302
    assert not LoopState.load().running
    assert operator_client.post(reverse("panel:loop"), {"action": "explode"}).status_code == 302


def _config_post(**overrides) -> dict:
    config = ImprovementConfig.load()
    from project.panel.forms import CONFIG_FIELDS

    data = {}
    for name in CONFIG_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = str(value)
    data.update(overrides)
    return data


def test_config_form_shows_inline_errors_for_an_interval_of_zero(operator_client):
    before = ImprovementConfig.load().improvement_interval
    response = operator_client.post(reverse("panel:config"), _config_post(improvement_interval="0"))
    assert response.status_code == 200
    html = response.content.decode()
    field = re.search(r'<div class="field has-error" data-field="improvement_interval">(.*?)</div>\s*</div>', html, re.S)
    assert field is not None, "the interval field is not marked as erroneous"
    assert "greater than or equal to 1" in field.group(1)
    assert ImprovementConfig.load().improvement_interval == before
    assert not OutboxEvent.objects.filter(type="config.changed").exists()


def test_config_form_shows_the_models_cross_field_error(operator_client):
    response = operator_client.post(reverse("panel:config"),
                                    _config_post(architecture_score_low="0.9", architecture_score_high="0.8"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-field="architecture_score_low"' in html and "must not be above architecture_score_high" in html
    assert ImprovementConfig.load().architecture_score_low == 0.75


def test_config_form_saves_through_config_update(operator_client):
    response = operator_client.post(reverse("panel:config"),
                                    _config_post(improvement_interval="42", max_concurrent_improvements="2"))
    assert response.status_code == 302
    config = ImprovementConfig.load()
    assert (config.improvement_interval, config.max_concurrent_improvements) == (42.0, 2)
    event = OutboxEvent.objects.filter(type="config.changed").latest("id")
    assert event.payload["changed"]["improvement_interval"] == 42.0


def test_pages_stay_small_with_a_long_history(history, operator_client):
    """Long histories are downsampled on the server: the page stays small, and its queries do not
    grow with the history (page timing belongs in bench/, not in a test on a shared machine)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from hormones.models import Hormone, HormoneEvent

    hormone = Hormone.objects.get(name="dopamine")
    HormoneEvent.objects.bulk_create([
        HormoneEvent(hormone=hormone, delta=0.01, level_before=0.3, level_after=0.31, cause=f"event {i}")
        for i in range(3000)
    ])
    run = history["running"]
    run.curve = [{"epoch": i, "train_loss": 1.0 / (i + 1), "val_score": 0.5, "t": i} for i in range(2000)]
    run.save(update_fields=["curve"])
    for url in ["/", reverse("panel:hormones"), reverse("panel:run", args=[run.pk])]:
        with CaptureQueriesContext(connection) as queries:
            response = operator_client.get(url)
        assert response.status_code == 200
        assert len(queries) < 60, (url, len(queries))
        assert len(response.content) < 300_000, (url, len(response.content))
