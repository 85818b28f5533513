"""The admin's "Cancel selected runs" action: the panel's cancel service (``run_cancel``) on each run,
with a count of what was cancelled and what was skipped because it had already ended."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from events.models import OutboxEvent
from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_create
from tests.browser.seed import panel_history

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:improvement_improvementrun_changelist"


@pytest.fixture
def admin_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    return client


def _cancel(client: Client, runs: list[ImprovementRun]):
    return client.post(reverse(CHANGELIST), {"action": "cancel_selected",
                                             "_selected_action": [run.pk for run in runs]}, follow=True)


def test_cancel_selected_cancels_queued_stops_running_and_skips_ended(admin_client):
    history = panel_history()
    queued = run_create(model=history["model"], strategy="training", enqueue=False)
    running, promoted, rejected = history["running"], history["runs"][0], history["rejected"]
    finished_before = {r.pk: (r.status, r.finished_at, r.decision) for r in (promoted, rejected)}
    events_before = OutboxEvent.objects.filter(type="run.finished").count()

    response = _cancel(admin_client, [queued, running, promoted, rejected])

    assert response.status_code == 200
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "1 cancelled, 1 running asked to stop, 2 skipped (already ended)"]
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED and queued.finished_at is not None
    assert queued.decision == "cancelled before it started"  # what the panel's Cancel button writes too
    running.refresh_from_db()
    assert running.status == RunStatus.RUNNING and running.cancel_requested  # its worker stops at its next report
    for run in (promoted, rejected):
        run.refresh_from_db()
        assert (run.status, run.finished_at, run.decision) == finished_before[run.pk]
        assert not run.cancel_requested
    # The cancelled run was announced like any other finish (one run.finished event: the queued one).
    assert OutboxEvent.objects.filter(type="run.finished").count() == events_before + 1


def test_cancelling_again_skips_what_is_already_cancelled(admin_client):
    history = panel_history()
    queued = run_create(model=history["model"], strategy="optimization", enqueue=False)
    _cancel(admin_client, [queued])
    response = _cancel(admin_client, [queued])
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "0 cancelled, 0 running asked to stop, 1 skipped (already ended)"]
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED


def test_the_action_is_offered_under_its_name(admin_client):
    panel_history()
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert '<option value="cancel_selected">Cancel selected runs</option>' in page
