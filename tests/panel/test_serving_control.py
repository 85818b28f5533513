"""The tasks page's "Serve" control (``panel:task-serving``): an operator pins a task's serving to an
implementation and version, and hands it back to the measurements; everyone else changes nothing.

Actors: alice (operator), bob (viewer), an anonymous visitor. Effects are read back from the
database and through ``GET /api/tasks/<slug>/serving``, the endpoint whose override shares the
control's service.
"""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from models_registry.models import ModelVersion
from models_registry.services import model_create
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState, ServingSwitch
from tests.browser.seed import version_made
from tests.factories import csv_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def served():
    """A task with two models: "baseline" (v1 inactive, v2 active, score 0.80) and "wide" (v1 active, 0.90)."""
    task = csv_task("blobs", n=120)
    baseline, wide = model_create(task=task, name="baseline"), model_create(task=task, name="wide")
    old = version_made(baseline, score=0.70, latency_ms=0.1, hidden=[4])
    chosen = version_made(baseline, score=0.80, latency_ms=0.1, hidden=[8], parent=old)
    best = version_made(wide, score=0.90, latency_ms=0.2, hidden=[16])
    return {"task": task, "old": old, "chosen": chosen, "best": best}


def url(slug: str) -> str:
    return reverse("panel:task-serving", args=[slug])


def api_serving(user, slug: str) -> dict:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    response = client.get(f"/api/tasks/{slug}/serving")
    assert response.status_code == 200, response.content
    return response.json()["state"]


def snapshot(task) -> tuple:
    state = ServingState.objects.filter(task=task).first()
    return (state and (state.implementation, state.version_id, state.pinned), ServingSwitch.objects.count())


def test_operator_pins_a_version_then_the_algorithm_then_hands_back_to_auto(served, operator_client, viewer):
    task, chosen = served["task"], served["chosen"]
    back = f"{reverse('panel:tasks')}#task-{task.slug}"

    response = operator_client.post(url(task.slug), {"serve": f"neural:{chosen.pk}"})
    assert response.status_code == 302 and response["Location"] == back
    state = api_serving(viewer, task.slug)
    # The operator's choice, not the task's best version (wide v1 scores higher).
    assert (state["implementation"], state["version_id"], state["pinned"]) == ("neural", chosen.pk, True)
    switch = ServingSwitch.objects.filter(task=task).first()
    assert (switch.reason, switch.actor, switch.to_version_id) == (SwitchReason.OPERATOR, "alice", chosen.pk)
    page = operator_client.get(back).content.decode()
    assert f"blobs: pinned to neural (baseline v{chosen.number})." in page
    assert re.search(rf'<option value="neural:{chosen.pk}" selected>', page)

    response = operator_client.post(url(task.slug), {"serve": "algorithmic"})
    assert response.status_code == 302
    state = api_serving(viewer, task.slug)
    assert (state["implementation"], state["version_id"], state["pinned"]) == ("algorithmic", None, True)

    response = operator_client.post(url(task.slug), {"serve": "auto"})
    assert response.status_code == 302
    state = api_serving(viewer, task.slug)
    assert state["pinned"] is False
    page = operator_client.get(back).content.decode()
    assert '<option value="auto" selected>' in page
    assert f"blobs: automatic again, serving {state['implementation']}" in page


def test_the_page_script_gets_json_with_the_new_state(served, operator_client):
    task, best = served["task"], served["best"]
    response = operator_client.post(url(task.slug), {"serve": "neural"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    data = response.json()
    assert data["ok"] is True and data["message"] == f"blobs: pinned to neural (wide v{best.number})."
    state = ServingState.objects.get(task=task)
    assert data["serving"] == {"implementation": "neural", "version_id": best.pk, "version": best.number,
                               "pinned": True}
    assert (state.implementation, state.version_id, state.pinned) == ("neural", best.pk, True)


@pytest.mark.parametrize("serve, message", [
    ("sideways", "serve: expected one of auto, neural, algorithmic or neural:<version id>, got 'sideways'"),
    ("algorithmic:3", "serve: expected one of auto, neural, algorithmic or neural:<version id>, got 'algorithmic:3'"),
    ("neural:v2", "serve: a version id is a whole number, got 'v2'"),
    ("", "serve: expected one of auto, neural, algorithmic or neural:<version id>, got ''"),
    ("x" * 41, "serve: Ensure this value has at most 40 characters (it has 41)."),
])
def test_a_bad_value_is_a_400_with_a_clear_message_and_changes_nothing(served, operator_client, serve, message):
    task = served["task"]
    operator_client.post(url(task.slug), {"serve": "algorithmic"})
    before = snapshot(task)
    response = operator_client.post(url(task.slug), {"serve": serve}, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response.json()["message"] == message
    response = operator_client.post(url(task.slug), {"serve": serve})  # without script: the page, the message in the row
    assert response.status_code == 400
    row = response.content.decode().split(f'id="task-{task.slug}"', 1)[1].split("</section>", 1)[0]
    assert f"data-form-error>{escape(message)}</span>" in row
    assert snapshot(task) == before


def test_a_version_that_is_not_active_or_not_the_tasks_is_refused(served, operator_client):
    task, old = served["task"], served["old"]
    other = version_made(model_create(task=csv_task("other", n=120), name="m"), score=0.9, latency_ms=0.1, hidden=[4])
    before = snapshot(task)
    refused = operator_client.post(url(task.slug), {"serve": f"neural:{old.pk}"}, HTTP_ACCEPT="application/json")
    assert refused.status_code == 400 and "is not active; activate it first" in refused.json()["message"]
    refused = operator_client.post(url(task.slug), {"serve": f"neural:{other.pk}"}, HTTP_ACCEPT="application/json")
    assert refused.status_code == 400
    assert refused.json()["message"] == "version_id: task blobs has no such active version"
    assert snapshot(task) == before


def test_viewers_and_visitors_are_refused_and_change_nothing(served, viewer_client):
    task = served["task"]
    before = snapshot(task)
    for serve in ("algorithmic", f"neural:{served['best'].pk}", "auto"):
        assert viewer_client.post(url(task.slug), {"serve": serve}).status_code == 403
        assert viewer_client.post(url(task.slug), {"serve": serve}, HTTP_ACCEPT="application/json").status_code == 403
        response = Client().post(url(task.slug), {"serve": serve})
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert snapshot(task) == before
    page = viewer_client.get(reverse("panel:tasks")).content.decode()
    assert "data-serving-control" not in page and 'name="serve"' not in page


def test_an_unknown_task_is_a_404_and_get_a_405(served, operator_client):
    assert operator_client.post(url("no-such-task"), {"serve": "auto"}).status_code == 404
    assert operator_client.get(url(served["task"].slug)).status_code == 405


def test_the_control_needs_a_csrf_token(served, operator):
    task = served["task"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    before = snapshot(task)
    assert client.post(url(task.slug), {"serve": "algorithmic"}).status_code == 403
    assert snapshot(task) == before
    page = client.get(reverse("panel:tasks")).content.decode()
    token = re.search(r'data-serving-control="blobs".*?name="csrfmiddlewaretoken" value="([^"]+)"', page, re.S).group(1)
    assert client.post(url(task.slug), {"serve": "algorithmic", "csrfmiddlewaretoken": token}).status_code == 302
    assert ServingState.objects.get(task=task).implementation == "algorithmic"


def test_operators_see_every_active_version_and_the_algorithm_as_choices(served, operator_client):
    task = served["task"]
    page = operator_client.get(reverse("panel:tasks")).content.decode()
    form = page.split(f'data-serving-control="{task.slug}"', 1)[1].split("</form>", 1)[0]
    values = re.findall(r'<option value="([^"]+)"', form)
    active = ModelVersion.objects.filter(model__task=task, is_active=True).order_by("model__name")
    assert values == ["auto", *[f"neural:{v.pk}" for v in active], "algorithmic"]
    assert f'neural:{served["old"].pk}"' not in form
    assert '<option value="auto" selected>' in form
