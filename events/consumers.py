"""WebSocket consumer for live events: authenticate, replay what was missed, forward, dedupe."""

from __future__ import annotations

from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from events.models import OutboxEvent
from events.payloads import GROUP
from events.publisher import events_after
from events.relay import relay_get

# A replay longer than this asks the browser to reload the page instead (its state is too old).
REPLAY_LIMIT = 5000
REPLAY_PAGE = 500
SEEN_WINDOW = 4096


class SeenIds:
    """The ids sent recently, to drop the second copy of an event (pushed on commit *and* relayed)."""

    def __init__(self, size: int = SEEN_WINDOW) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self.size = size

    def add(self, event_id: int) -> bool:
        """Remember ``event_id``; False if it was already there."""
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        return True


class LiveEventsConsumer(AsyncJsonWebsocketConsumer):
    """Pushes every live event to authenticated browsers.

    A client connects with ``?after=<last event id>``, receives every outbox event after
    it, then live ones; it may also send ``{"replay_after": <id>}`` when it notices a gap.
    Each event id is sent at most once per connection; the browser dedupes across
    connections. Anonymous users are refused (the origin is checked in ``project.routing``).
    """

    relay = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.seen = SeenIds()
        if settings.PLASTICITY_OUTBOX_RELAY:
            # Attach before joining and replaying: see OutboxRelay.attach.
            self.relay = relay_get(self.channel_layer)
            await self.relay.attach()
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        after = _parse_after(self.scope.get("query_string", b""))
        if after is not None:
            await self._replay(after)

    async def disconnect(self, code: int) -> None:
        if self.relay is not None:
            self.relay.detach()
            self.relay = None
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        after = content.get("replay_after") if isinstance(content, dict) else None
        if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
            await self._replay(after)

    async def live_event(self, event: dict) -> None:
        await self._forward(event["message"])

    async def live_batch(self, event: dict) -> None:
        for message in event["messages"]:
            await self._forward(message)

    async def _forward(self, message: dict) -> None:
        if self.seen.add(message["id"]):
            await self.send_json(message)

    async def _replay(self, after: int) -> None:
        if await database_sync_to_async(_trimmed_since)(after):
            await self.send_json({"type": "resync", "reason": "events after this id were trimmed"})
            return
        sent = 0
        while sent < REPLAY_LIMIT:
            page = await database_sync_to_async(events_after)(after, limit=REPLAY_PAGE)
            for message in page:
                await self._forward(message)
            sent += len(page)
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1]["id"]
        await self.send_json({"type": "resync", "reason": f"more than {REPLAY_LIMIT} events were missed"})


def _trimmed_since(after: int) -> bool:
    """True when events right after ``after`` may have been trimmed from the outbox.

    ``after`` = 0 comes from a page rendered while the outbox was empty: everything is new.
    """
    oldest = OutboxEvent.objects.order_by("id").values_list("id", flat=True).first()
    return after > 0 and oldest is not None and oldest > after + 1


def _parse_after(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return None
    return value if value >= 0 else None
