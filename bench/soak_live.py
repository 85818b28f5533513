"""The soak's live-event listener: a WebSocket client of ``/ws/live/`` that behaves like the browser's.

It follows ``static/panel/live.js``: it connects with ``?after=<id>`` (the page's
``data-last-event-id`` at first, then the newest id it saw, or just below the oldest gap it still
waits for), reconnects with a back-off (0.5 s doubling to 5 s) when the connection drops, drops
ids it already has, and when an id below the newest one is missing it asks the server for it again
with ``{"replay_after": id - 1}`` after ``GAP_ASK_S``, giving up after ``GAP_GIVE_UP_S`` as the
browser does (it takes such an id for a rolled-back one). Everything it did is counted, so the
benchmark can compare what it received with what the outbox holds.

It runs on its own thread with its own event loop; ``stop()`` ends it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

GAP_ASK_S = 1.5
GAP_GIVE_UP_S = 10.0
MAX_GAP = 200
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0


class LiveListener:
    """Receives live events for as long as it runs; ``received`` holds every event id it got."""

    def __init__(self, *, ws_url: str, origin: str, cookie: str, after: int) -> None:
        self.ws_url, self.origin, self.cookie = ws_url, origin, cookie
        self.first_after = after
        self.last_id = after
        self.received: set[int] = set()
        self.gaps: dict[int, float] = {}  # missing id -> when it was first noticed (monotonic)
        self.counts = {"connections": 0, "drops": 0, "failed_connects": 0, "messages": 0, "duplicates": 0,
                       "gaps_noticed": 0, "gaps_filled": 0, "gaps_given_up": 0, "replay_requests": 0,
                       "resyncs": 0}
        self.connected_at: list[float] = []
        self.dropped_at: list[float] = []
        self.errors: list[str] = []
        self._last_ask = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="soak-live", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def cursor(self) -> int:
        """The id to resume after: below the oldest gap still waited for, else the newest seen."""
        return min([self.last_id, *(missing - 1 for missing in self.gaps)])

    # ------------------------------------------------------------------ receiving

    def receive(self, message: dict[str, Any]) -> None:
        self.counts["messages"] += 1
        if message.get("type") == "resync":
            # The browser reloads the page here: what lies between is never shown. Counted; the
            # comparison with the outbox at the end shows what it cost.
            self.counts["resyncs"] += 1
            return
        event_id = message.get("id")
        if not isinstance(event_id, int):
            return
        if event_id in self.received:
            self.counts["duplicates"] += 1
            return
        self.received.add(event_id)
        if self.gaps.pop(event_id, None) is not None:
            self.counts["gaps_filled"] += 1
        if event_id > self.last_id:
            # Ids skipped before the first event are no gaps: the server replays every existing
            # event after the cursor in order (live.js does the same).
            if len(self.received) > 1 and event_id - self.last_id <= MAX_GAP:
                now = time.monotonic()
                for missing in range(self.last_id + 1, event_id):
                    if missing not in self.received and missing not in self.gaps:
                        self.gaps[missing] = now
                        self.counts["gaps_noticed"] += 1
            self.last_id = event_id

    async def _repair_gaps(self, ws) -> None:
        now = time.monotonic()
        oldest = None
        for missing, since in list(self.gaps.items()):
            if now - since > GAP_GIVE_UP_S:
                del self.gaps[missing]
                self.counts["gaps_given_up"] += 1
            elif now - since > GAP_ASK_S and (oldest is None or missing < oldest):
                oldest = missing
        if oldest is not None and now - self._last_ask > GAP_ASK_S:
            self._last_ask = now
            self.counts["replay_requests"] += 1
            await ws.send(json.dumps({"replay_after": oldest - 1}))

    # ------------------------------------------------------------------ the connection

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            opened = False
            try:
                async with connect(f"{self.ws_url}?after={self.cursor()}", origin=self.origin,  # type: ignore[arg-type]
                                   additional_headers={"Cookie": self.cookie}, proxy=None, max_queue=None,
                                   open_timeout=10) as ws:
                    opened = True
                    self.counts["connections"] += 1
                    self.connected_at.append(time.time())
                    backoff = BACKOFF_MIN_S
                    try:
                        while not self._stop.is_set():
                            await self._repair_gaps(ws)
                            try:
                                # recv() may be cancelled without losing a message (websockets' asyncio API).
                                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                            except TimeoutError:
                                continue
                            self.receive(json.loads(raw))
                    finally:
                        self.dropped_at.append(time.time())
                return  # stopped
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                self.counts["drops" if opened else "failed_connects"] += 1
                if len(self.errors) < 50:
                    self.errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    def report(self) -> dict[str, Any]:
        return {**self.counts, "first_after": self.first_after, "last_id": self.last_id,
                "received": len(self.received), "gaps_open": len(self.gaps), "connected_at": self.connected_at,
                "dropped_at": self.dropped_at, "errors": self.errors}
