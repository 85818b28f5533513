"""The WebSocket consumer (auth, replay, dedupe) and the outbox relay, without a browser."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from events.consumers import LiveEventsConsumer, SeenIds
from events.models import OutboxEvent
from events.payloads import RunPayload
from events.publisher import publish
from events.relay import OutboxRelay


def _progress(i: int) -> RunPayload:
    return RunPayload(run_id=1, model_id=1, model="t/m", task="t", strategy="training", status="running",
                      progress=i / 100, message=f"seq {i}")


def _publish(n: int) -> list[int]:
    ids = []
    for i in range(n):
        with transaction.atomic():
            ids.append(publish("run.progress", _progress(i)).id)
    return ids


def _outbox_row(**payload) -> int:
    """An event as another process writes it: a row only, no push to this process's layer."""
    return OutboxEvent.objects.create(type="run.progress", payload=payload).id


async def _receive_all(communicator, *, quiet: float = 0.3) -> list[dict]:
    messages = []
    while not await communicator.receive_nothing(timeout=quiet):
        messages.append(await communicator.receive_json_from())
    return messages


def _communicator(user, after: int | None = None) -> WebsocketCommunicator:
    path = "/ws/live/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(LiveEventsConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    return communicator


def test_seen_ids_window():
    seen = SeenIds(size=3)
    assert seen.add(1) and seen.add(2) and not seen.add(1)
    seen.add(3), seen.add(4)
    assert seen.add(1)  # forgotten once out of the window


@pytest.mark.django_db(transaction=True)
def test_anonymous_users_are_refused():
    async def scenario():
        connected, code = await _communicator(AnonymousUser()).connect()
        assert not connected

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_reconnect_replays_missed_events_and_drops_duplicates(operator, settings):
    settings.PLASTICITY_OUTBOX_RELAY = False
    ids = _publish(5)

    async def scenario():
        communicator = _communicator(operator, after=ids[1])
        connected, _ = await communicator.connect()
        assert connected
        replayed = await _receive_all(communicator)
        assert [m["id"] for m in replayed] == ids[2:]
        # A push of an event already sent (published here *and* relayed) is dropped.
        layer = get_channel_layer()
        await layer.group_send("live", {"type": "live.event", "message": replayed[0]})
        new_id = await database_sync_to_async(_outbox_row)(seq=99)
        fresh = (await database_sync_to_async(OutboxEvent.objects.get)(id=new_id)).as_message()
        await layer.group_send("live", {"type": "live.batch", "messages": [replayed[1], fresh]})
        assert [m["id"] for m in await _receive_all(communicator)] == [new_id]
        # The client noticed a gap and asks again: only what it lacks... the consumer still dedupes.
        await communicator.send_json_to({"replay_after": ids[0]})
        assert [m["id"] for m in await _receive_all(communicator)] == [ids[1]]
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_replay_of_trimmed_events_asks_for_a_resync(operator, settings):
    settings.PLASTICITY_OUTBOX_RELAY = False
    ids = _publish(4)
    OutboxEvent.objects.filter(id__lte=ids[2]).delete()

    async def scenario():
        communicator = _communicator(operator, after=ids[0])
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from())["type"] == "resync"
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_relay_carries_rows_written_elsewhere_to_connected_consumers(operator, settings):
    settings.PLASTICITY_OUTBOX_RELAY = True
    start = _publish(1)[0]

    async def scenario():
        communicator = _communicator(operator, after=start)
        assert (await communicator.connect())[0]
        written = [await database_sync_to_async(_outbox_row)(seq=i) for i in range(3)]
        got = []
        for _ in range(3):
            got.append((await communicator.receive_json_from(timeout=3))["id"])
        assert got == written
        from events import relay as relay_module

        relay = relay_module._relay
        assert relay is not None and relay.running and relay.subscribers == 1
        await communicator.disconnect()
        await asyncio.sleep(relay.interval_s * 3)
        assert not relay.running  # nobody listens: no polling

    async_to_sync(scenario)()


@pytest.mark.django_db
def test_relay_waits_for_an_id_committed_late():
    relay = OutboxRelay(layer=None, gap_grace_s=60)
    first = _outbox_row(seq=0)
    relay.last = first
    a, b, c = (_outbox_row(seq=i) for i in (1, 2, 3))
    OutboxEvent.objects.filter(id=b).delete()  # b's transaction has not committed yet
    assert [m["id"] for m in relay._fetch()] == [a, c]
    assert set(relay.gaps) == {b}
    OutboxEvent.objects.create(id=b, type="run.progress", payload={"seq": 2})  # ... now it has
    assert [m["id"] for m in relay._fetch()] == [b]
    assert relay.gaps == {} and relay.last == c
    assert relay._fetch() == []


@pytest.mark.django_db
def test_relay_gives_up_on_a_rolled_back_id():
    relay = OutboxRelay(layer=None, gap_grace_s=0.0)
    relay.last = _outbox_row(seq=0)
    a, b = _outbox_row(seq=1), _outbox_row(seq=2)
    OutboxEvent.objects.filter(id=a).delete()
    assert [m["id"] for m in relay._fetch()] == [b]
    assert relay._fetch() == [] and relay.gaps == {}
