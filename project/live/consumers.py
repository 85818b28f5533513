"""WebSocket consumer for live events: authenticate, replay what was missed, forward."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from project.live.payloads import GROUP
from project.live.publisher import events_after


class LiveEventsConsumer(AsyncJsonWebsocketConsumer):
    """Pushes every live event to authenticated browsers.

    A client connects with ``?after=<last event id>``, receives every outbox event after
    it, then live ones; it drops events whose id it has already seen, so a replay and a
    live push of the same event never show twice.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        after = _parse_after(self.scope.get("query_string", b""))
        if after is not None:
            for message in await database_sync_to_async(events_after)(after):
                await self.send_json(message)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        # The only client message: ask for a replay after an id (used after a resync).
        after = content.get("replay_after") if isinstance(content, dict) else None
        if isinstance(after, int) and after >= 0:
            for message in await database_sync_to_async(events_after)(after):
                await self.send_json(message)

    async def live_event(self, event: dict) -> None:
        await self.send_json(event["message"])


def _parse_after(query_string: bytes) -> int | None:
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return None
    return value if value >= 0 else None
