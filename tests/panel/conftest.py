"""Fixtures of the server-side panel tests: a small history (no training) and logged-in clients."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.fixture
def history(db):
    from tests.browser.seed import panel_history

    return panel_history()


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer) -> Client:
    client = Client()
    client.force_login(viewer)
    return client
