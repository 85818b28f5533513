"""The outbox relay: carries events other processes committed into this process's channel layer.

In the embedded mode the channel layer is in memory, so an event a worker process publishes
never reaches the web process through it. The relay closes that gap: an asyncio task in the
web (ASGI) process polls the outbox for rows with ``id > last`` (an indexed primary-key range
query, every ``interval_s``) and sends each batch to the ``live`` group as one message.

* One relay per process and event loop, started lazily when the first WebSocket consumer
  attaches and stopped when the last one detaches (no browser, no polling). A restarted relay
  begins at the newest event: consumers replay what they missed themselves (``?after=<id>``).
* Events published in this process are pushed on commit *and* relayed; consumers and
  browsers drop ids they already have, so a duplicate never shows.
* An id below the newest one seen that is still missing (a transaction that took its id
  earlier but committed later, possible on PostgreSQL) is looked for again for ``gap_grace_s``
  seconds before it is taken for a rolled-back id; it is sent when it appears.
* The database is read on one dedicated thread that keeps its connection open, so a poll
  costs one small query, not a new connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import connection
from django.db.models import Q

from events.models import OutboxEvent
from events.payloads import GROUP

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
BATCH = 500
GAP_GRACE_S = 10.0
MAX_GAPS = 1000
ERROR_BACKOFF_S = 1.0


class OutboxRelay:
    """Polls the outbox and forwards new events to the ``live`` group while anyone listens."""

    def __init__(self, *, layer, interval_s: float = POLL_INTERVAL_S, batch: int = BATCH,
                 gap_grace_s: float = GAP_GRACE_S) -> None:
        self.layer = layer
        self.interval_s = interval_s
        self.batch = batch
        self.gap_grace_s = gap_grace_s
        self.last = 0
        self.gaps: dict[int, float] = {}  # missing id -> when it was first missed (monotonic)
        self.subscribers = 0
        self.sent = 0
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay")

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def attach(self) -> None:
        """A consumer starts listening; start polling if this is the first one.

        Called before the consumer joins the group and replays: the relay's starting point
        is read first, so the consumer's replay and the relay together cover every event.
        """
        async with self._lock:
            self.subscribers += 1
            if not self.running:
                self.last = await self._in_thread(_latest_id)
                self.gaps.clear()
                self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    def detach(self) -> None:
        """A consumer stopped listening; the poll loop ends after its current pass when none is left."""
        self.subscribers = max(0, self.subscribers - 1)

    async def _run(self) -> None:
        while self.subscribers > 0:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a locked or restarting database must not kill the relay
                logger.warning("outbox relay: poll failed; retrying", exc_info=True)
                await self._in_thread(_connection_reset)
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            await asyncio.sleep(self.interval_s)

    # ------------------------------------------------------------------ one pass

    async def poll_once(self) -> int:
        """Forward every event committed since the last pass; returns how many were sent."""
        messages = await self._in_thread(self._fetch)
        if messages:
            await self.layer.group_send(GROUP, {"type": "live.batch", "messages": messages})
            self.sent += len(messages)
        return len(messages)

    def _fetch(self) -> list[dict]:
        now = time.monotonic()
        for missing, since in list(self.gaps.items()):
            if now - since > self.gap_grace_s:
                del self.gaps[missing]
        condition = Q(id__gt=self.last)
        if self.gaps:
            condition |= Q(id__in=list(self.gaps))
        rows = list(OutboxEvent.objects.filter(condition).order_by("id")[: self.batch])
        for row in rows:
            if row.id in self.gaps:
                del self.gaps[row.id]
            elif row.id > self.last:
                for missing in range(self.last + 1, min(row.id, self.last + 1 + MAX_GAPS)):
                    if len(self.gaps) < MAX_GAPS:
                        self.gaps.setdefault(missing, now)
                self.last = row.id
        return [row.as_message() for row in rows]

    async def _in_thread(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


def _latest_id() -> int:
    return OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _connection_reset() -> None:
    connection.close()


# ---------------------------------------------------------------------- the process's relay

_relay: OutboxRelay | None = None
_relay_loop: asyncio.AbstractEventLoop | None = None


def relay_get(layer) -> OutboxRelay:
    """This process's relay for the running event loop (a new loop, as in tests, gets a new one)."""
    global _relay, _relay_loop
    loop = asyncio.get_running_loop()
    if _relay is None or _relay_loop is not loop or _relay.layer is not layer:
        _relay, _relay_loop = OutboxRelay(layer=layer), loop
    return _relay
