"""Delivery through a channel's queue to a local HTTP receiver: arrival, a receiver down
for a while, 429 with Retry-After, a full queue, refused requests, signatures, secrets."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from quantmesh.notify.events import lock_halted, symbol_taken_over
from quantmesh.notify.formats import SCHEMA, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

from .support import Receiver, Reply, channel_settings, counted, make_queue, sample

pytestmark = pytest.mark.timeout(30)

SECRET = "hmac-secret-7f3a9c"
TOKEN = "123456:AAF-telegram-token-5b1e"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def test_a_webhook_event_arrives_signed_in_the_versioned_schema(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    settings = channel_settings(type="webhook", webhook_url=receiver.url(), secret=SECRET)
    queue = make_queue(settings, registry)
    queue.start()
    try:
        event = symbol_taken_over("ETH/USDT", "node-b", 4.25)
        assert queue.put(event)
        [request] = await receiver.wait_delivered(1)
        await counted(registry, "webhook", "sent", 1)
    finally:
        await queue.close()
    body = request.json()
    assert body["schema"] == SCHEMA == "quantmesh.notification/1"
    assert body["id"] == event.id and request.headers["X-QuantMesh-Delivery"] == event.id
    assert (body["event"], body["level"], body["instance"], body["symbol"]) == (
        "symbol_taken_over",
        "warning",
        "node-a",
        "ETH/USDT",
    )
    assert body["data"] == {"previous_owner": "node-b", "unowned_seconds": 4.25}
    assert body["at"].endswith("Z") and "node-b" in body["text"]
    # the receiver checks the signature over "<timestamp>.<raw body>" with the shared secret
    stamp = request.headers[TIMESTAMP_HEADER]
    assert abs(int(stamp) - time.time()) < 5
    assert verify(SECRET, stamp, request.body, request.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", stamp, request.body, request.headers[SIGNATURE_HEADER])
    assert not verify(SECRET, stamp, request.body + b" ", request.headers[SIGNATURE_HEADER])
    assert sample(registry, "webhook", "sent") == 1


async def test_an_unsigned_webhook_has_no_signature_header(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    queue = make_queue(channel_settings(type="webhook", webhook_url=receiver.url()), registry)
    queue.start()
    try:
        queue.put(lock_halted("halted", "Connection refused"))
        [request] = await receiver.wait_delivered(1)
    finally:
        await queue.close()
    assert SIGNATURE_HEADER not in request.headers
    assert request.json()["symbol"] is None


async def test_messages_sent_while_the_receiver_is_down_arrive_after_in_order(
    registry: CollectorRegistry,
) -> None:
    receiver = Receiver()  # not listening yet
    queue = make_queue(channel_settings(type="slack", webhook_url=receiver.url()), registry)
    queue.start()
    try:
        events = [symbol_taken_over(f"S{i}/USDT", "x", 1.0) for i in range(3)]
        for event in events:
            assert queue.put(event)  # never waits, receiver down or not
        await asyncio.sleep(0.8)
        assert sample(registry, "slack", "retried") >= 2
        await receiver.start()
        delivered = await receiver.wait_delivered(3)
        await counted(registry, "slack", "sent", 3)
        texts = [request.json()["text"] for request in delivered]
        assert [t.split(" taken over")[0].split("] ")[1] for t in texts] == [
            "S0/USDT",
            "S1/USDT",
            "S2/USDT",
        ]
        assert sample(registry, "slack", "sent") == 3
        assert sample(registry, "slack", "failed") == 0
    finally:
        await queue.close()
        await receiver.stop()


async def test_a_429_is_retried_after_the_retry_after_it_asked_for(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    receiver.replies.append(Reply(429, {"Retry-After": "1"}, "slow down"))
    queue = make_queue(channel_settings(type="webhook", webhook_url=receiver.url()), registry)
    queue.start()
    try:
        queue.put(lock_halted("halted", "down"))
        await receiver.wait_delivered(1)
    finally:
        await queue.close()
    first, second = receiver.requests
    assert first.status == 429 and second.status == 200
    # the backoff alone would have retried after 0.05 s
    assert second.at - first.at >= 0.95
    assert sample(registry, "webhook", "retried") == 1


async def test_discord_and_telegram_429s_say_how_long_in_their_body(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    receiver.replies.append(Reply(429, {}, '{"message": "rate limited", "retry_after": 0.6}'))
    receiver.replies.append(
        Reply(429, {}, '{"ok": false, "error_code": 429, "parameters": {"retry_after": 1}}')
    )
    discord = make_queue(
        channel_settings(type="discord", webhook_url=receiver.url("/api/webhooks/1/x")), registry
    )
    discord.start()
    try:
        discord.put(lock_halted("halted", "down"))
        await receiver.wait_delivered(1)
    finally:
        await discord.close()
    gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.requests)]
    assert [r.status for r in receiver.requests] == [429, 429, 200]
    assert gaps[0] >= 0.55 and gaps[1] >= 0.95, gaps
    body = receiver.delivered[0].json()
    assert "content" in body and body["allowed_mentions"] == {"parse": []}


async def test_a_full_queue_drops_new_messages_and_counts_them(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    queue = make_queue(
        channel_settings(type="webhook", webhook_url=receiver.url()), registry, size=2
    )
    with capture_logs() as logs:
        accepted = [queue.put(lock_halted("halted", str(i))) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert sample(registry, "webhook", "dropped") == 3
    # a storm of drops is one log line (then one per interval), each counted
    assert [e["event"] for e in logs] == ["notification_dropped"]
    queue.start()  # the sender starts late: what was queued still goes
    try:
        delivered = await receiver.wait_delivered(2)
        await counted(registry, "webhook", "sent", 2)
    finally:
        await queue.close()
    assert [r.json()["data"]["reason"] for r in delivered] == ["0", "1"]
    assert sample(registry, "webhook", "sent") == 2


async def test_a_request_refused_for_itself_is_not_retried(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    receiver.replies.append(Reply(404, {}, "no such webhook"))
    queue = make_queue(channel_settings(type="slack", webhook_url=receiver.url()), registry)
    queue.start()
    try:
        with capture_logs() as logs:
            queue.put(lock_halted("halted", "a"))
            queue.put(lock_halted("halted", "b"))
            await receiver.wait_delivered(1)
            await counted(registry, "slack", "sent", 1)
    finally:
        await queue.close()
    assert [r.status for r in receiver.requests] == [404, 200]
    assert sample(registry, "slack", "failed") == 1 and sample(registry, "slack", "sent") == 1
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["error"] == "HTTP 404: no such webhook"


async def test_a_message_not_delivered_within_retry_for_is_given_up(
    registry: CollectorRegistry,
) -> None:
    receiver = Receiver()  # never listens
    queue = make_queue(
        channel_settings(type="webhook", webhook_url=receiver.url()), registry, retry_for=0.3
    )
    queue.start()
    try:
        queue.put(lock_halted("halted", "a"))
        deadline = time.monotonic() + 5
        while sample(registry, "webhook", "failed") < 1:
            assert time.monotonic() < deadline, "never given up"
            await asyncio.sleep(0.05)
    finally:
        await queue.close()
    assert sample(registry, "webhook", "retried") >= 1


async def test_telegram_gets_send_message_and_its_token_never_reaches_the_logs(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    settings = channel_settings(
        type="telegram", token=TOKEN, chat_id=-100123, api_base=f"http://127.0.0.1:{receiver.port}"
    )
    # the receiver refuses once, echoing the URL it was called on (with the token in it)
    receiver.replies.append(Reply(502, {}, f"bad gateway for /bot{TOKEN}/sendMessage"))
    queue = make_queue(settings, registry)
    queue.start()
    try:
        with capture_logs() as logs:
            queue.put(symbol_taken_over("ETH/USDT", "node-b", 2.0))
            [request] = await receiver.wait_delivered(1)
    finally:
        await queue.close()
    assert request.path == f"/bot{TOKEN}/sendMessage"
    body = request.json()
    assert body["chat_id"] == "-100123"
    assert "ETH/USDT taken over from node-b" in body["text"] and "[node-a]" in body["text"]
    retries = [e for e in logs if e["event"] == "notification_retry"]
    assert retries and "HTTP 502" in retries[0]["error"]
    assert TOKEN not in repr(logs)


async def test_a_webhook_url_and_secret_never_reach_the_logs(registry: CollectorRegistry) -> None:
    url = f"http://127.0.0.1:{Receiver().port}/hooks/{SECRET}-path?token={TOKEN}"
    queue = make_queue(
        channel_settings(type="webhook", webhook_url=url, secret=SECRET), registry, retry_for=0.2
    )
    queue.start()
    try:
        with capture_logs() as logs:
            queue.put(lock_halted("halted", "a"))
            deadline = time.monotonic() + 5
            while sample(registry, "webhook", "failed") < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await queue.close()
    assert logs and SECRET not in repr(logs) and TOKEN not in repr(logs)


async def test_what_is_queued_at_close_is_counted_abandoned(registry: CollectorRegistry) -> None:
    receiver = Receiver()  # down: nothing leaves the queue
    queue = make_queue(channel_settings(type="webhook", webhook_url=receiver.url()), registry)
    queue.start()
    queue.put(lock_halted("halted", "a"))
    queue.put(lock_halted("halted", "b"))
    await asyncio.sleep(0.1)
    await queue.close()
    assert sample(registry, "webhook", "abandoned") == 2


async def test_a_webhook_path_echoed_by_the_receiver_never_reaches_the_logs(
    receiver: Receiver, registry: CollectorRegistry
) -> None:
    path = "/services/T0001/B0002/PathTokenXyZ123"
    receiver.replies.append(Reply(500, {}, f"no route for {path} today"))
    queue = make_queue(channel_settings(type="slack", webhook_url=receiver.url(path)), registry)
    queue.start()
    try:
        with capture_logs() as logs:
            queue.put(lock_halted("halted", "a"))
            await receiver.wait_delivered(1)
            await counted(registry, "slack", "sent", 1)
    finally:
        await queue.close()
    [retry] = [e for e in logs if e["event"] == "notification_retry"]
    assert retry["error"] == "HTTP 500: no route for *** today"
    assert "PathTokenXyZ123" not in repr(logs) + repr(queue.channel)
