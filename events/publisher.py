"""The one live-event publisher.

``publish`` writes an outbox row inside the caller's transaction and pushes the event to
the channel layer only after that transaction commits, so a browser never sees an event
for a change that was rolled back, and a worker process without a shared channel layer
(embedded mode) still reaches browsers through the outbox relay in the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events.models import OutboxEvent
from events.payloads import GROUP, EventType, payload_problems

logger = logging.getLogger(__name__)


class PayloadMismatch(TypeError):
    """A sender published a payload that does not match the TypedDict declared for its event type."""


def publish(event_type: EventType, payload: Mapping[str, Any]) -> OutboxEvent:
    """Write the event to the outbox in the caller's transaction; push it to browsers on commit.

    ``payload`` is the event type's TypedDict (``events.payloads``); with
    ``PLASTICITY_CHECK_EVENT_PAYLOADS`` on, a payload that does not match it is refused.
    """
    if getattr(settings, "PLASTICITY_CHECK_EVENT_PAYLOADS", False):
        problems = payload_problems(event_type, payload)
        if problems:
            raise PayloadMismatch(f"{event_type}: " + "; ".join(problems))
    event = OutboxEvent.objects.create(type=event_type, payload=dict(payload))
    transaction.on_commit(lambda: push_to_channel_layer(event.as_message()))
    return event


def push_to_channel_layer(message: dict) -> None:
    """Best effort: a channel-layer outage must never undo or block a state change."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "live.event", "message": message})
    except Exception:  # noqa: BLE001 - replay from the outbox covers what was not pushed
        logger.warning("live event %s not pushed; clients will replay it from the outbox", message["id"])


def events_after(last_id: int, *, limit: int = 500) -> list[dict]:
    return [e.as_message() for e in OutboxEvent.objects.filter(id__gt=last_id).order_by("id")[:limit]]


def latest_event_id() -> int:
    last = OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first()
    return last or 0


def outbox_trim(*, older_than: timedelta = timedelta(days=2)) -> int:
    deleted, _ = OutboxEvent.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
