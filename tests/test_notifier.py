"""The notifier over a real SQLite outbox: retries, permanent failures, rate limits, leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.channels.base import RateLimit
from monitor.channels.webhook import Options as WebhookOptions
from monitor.channels.webhook import WebhookChannel
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage
from monitor.notify.notifier import Notifier, NotifierMetrics, RetryPolicy
from monitor.notify.sample import sample_context
from monitor.notify.templates import TemplateRenderer
from monitor.notify.undelivered import UndeliveredNote
from monitor.store import OutboxStatus, Store
from tests.conftest import FakeClock, pg_admin, run_elsewhere

T0 = 1_800_000_000.0


class ScriptedChannel:
    """A channel whose answers a test scripts: one fake, at the channel boundary."""

    def __init__(self, name: str, answers: list[Exception | None] | None = None) -> None:
        self.name = name
        self.answers = list(answers or [])
        self.delivered: list[str] = []
        self.messages: list[RenderedMessage] = []

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.delivered.append(message.dedup_key)
        self.messages.append(message)
        return DeliveryReceipt(f"id-{len(self.delivered)}")


def message(key: str, channel: str = "oncall-sms") -> RenderedMessage:
    return RenderedMessage(
        dedup_key=key,
        channel=channel,
        event="opened",
        recipients=(),
        subject="INC-1 down",
        text="down",
        sms="INC-1 down",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield opened
    finally:
        await opened.close()


def notifier(
    store: Store, channel: ScriptedChannel, clock: FakeClock, **kwargs: object
) -> Notifier:
    return Notifier(
        store,
        {channel.name: channel},
        NotifierMetrics(CollectorRegistry()),
        retry=RetryPolicy(initial=30, max_delay=600, max_attempts=3),
        wall=clock,
        **kwargs,
    )  # type: ignore[arg-type]


async def statuses(store: Store) -> list[tuple[str, OutboxStatus, str | None]]:
    rows = await store.list_outbox()
    return [(row.dedup_key, row.status, row.last_error) for row in rows]


async def test_retryable_failures_back_off_then_deliver_once(store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel(
        "oncall-sms",
        [
            DeliveryError("503 from gateway", retryable=True),
            DeliveryError("timeout", retryable=True),
        ],
    )
    sender = notifier(store, channel, clock)
    await store.enqueue([message("INC-1:step:0:oncall-sms")], clock.now)
    assert await sender.deliver_due() == 1
    assert channel.delivered == []
    clock.now += 29  # backoff 30 s: not yet
    assert await sender.deliver_due() == 0
    clock.now += 1
    assert await sender.deliver_due() == 1  # second failure: backoff 60 s
    clock.now += 60
    assert await sender.deliver_due() == 1
    assert channel.delivered == ["INC-1:step:0:oncall-sms"]
    clock.now += 3600
    assert await sender.deliver_due() == 0  # sent once, never again
    [row] = await store.list_outbox()
    assert row.status is OutboxStatus.SENT and row.receipt_id == "id-1"


async def test_permanent_failure_is_not_retried(store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel(
        "oncall-sms", [DeliveryError("isv.MOBILE_NUMBER_ILLEGAL", retryable=False)]
    )
    sender = notifier(store, channel, clock)
    await store.enqueue([message("k1")], clock.now)
    await sender.deliver_due()
    clock.now += 86400
    assert await sender.deliver_due() == 0
    assert await statuses(store) == [("k1", OutboxStatus.FAILED, "isv.MOBILE_NUMBER_ILLEGAL")]


async def test_out_of_retries_is_failed(store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel("oncall-sms", [DeliveryError("down", retryable=True)] * 5)
    sender = notifier(store, channel, clock)
    await store.enqueue([message("k1")], clock.now)
    for _ in range(5):
        await sender.deliver_due()
        clock.now += 3600
    assert await statuses(store) == [("k1", OutboxStatus.FAILED, "down")]
    assert channel.delivered == []


async def test_retry_after_from_the_provider_is_honoured(store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel("oncall-sms", [DeliveryError("429", retryable=True, retry_after=300)])
    sender = notifier(store, channel, clock)
    await store.enqueue([message("k1")], clock.now)
    await sender.deliver_due()
    clock.now += 299
    assert await sender.deliver_due() == 0
    clock.now += 1
    await sender.deliver_due()
    assert channel.delivered == ["k1"]


async def test_rate_limit_spreads_a_burst(store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel("oncall-sms")
    sender = notifier(store, channel, clock, rate_limits={"oncall-sms": 2})
    await store.enqueue([message(f"k{i}") for i in range(5)], clock.now)
    await sender.deliver_due()
    assert len(channel.delivered) == 2
    clock.now += 60
    await sender.deliver_due()
    assert len(channel.delivered) == 4
    clock.now += 60
    await sender.deliver_due()
    assert sorted(channel.delivered) == [f"k{i}" for i in range(5)]


async def test_a_crash_mid_send_is_sent_again_after_the_lease(store: Store) -> None:
    clock = FakeClock(T0)
    await store.enqueue([message("k1")], clock.now)
    # a daemon claims the row and dies before marking it
    claimed = await store.claim_due(clock.now, 10, lease_seconds=120)
    assert [row.dedup_key for row in claimed] == ["k1"]
    channel = ScriptedChannel("oncall-sms")
    sender = notifier(store, channel, clock)
    assert await sender.deliver_due() == 0  # leased: nobody else sends it meanwhile
    clock.now += 121
    assert await sender.deliver_due() == 1
    assert channel.delivered == ["k1"]


async def test_a_channel_removed_from_the_config_fails_its_messages(store: Store) -> None:
    clock = FakeClock(T0)
    sender = notifier(store, ScriptedChannel("noc-email"), clock)
    await store.enqueue([message("k1", channel="old-sms")], clock.now)
    await sender.deliver_due()
    [(_, status, error)] = await statuses(store)
    assert status is OutboxStatus.FAILED and "not configured" in (error or "")


# ------------------------------------------------------------------ one incident, in order


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite, or an emptied PostgreSQL schema (127.0.0.1:5432)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        run_elsewhere(
            pg_admin(url.rsplit("/", 1)[1], "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
        )
    opened = await Store.open(url)
    try:
        yield opened
    finally:
        await opened.close()


def incident_message(event: str, person: str = "+8613800000001") -> RenderedMessage:
    """A message of INC-1 rendered from the shipped templates, as the daemon queues it."""
    incident = sample_context(event)
    parts = TemplateRenderer().render(event, incident)
    return RenderedMessage(
        dedup_key=f"INC-1:{event}:oncall-sms:{person}",
        channel="oncall-sms",
        event=event,
        recipients=(person,),
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
        sms=parts.sms,
        payload=parts.payload,
        incident_id="INC-1",
    )


async def test_resolved_waits_for_its_opened_while_that_is_retried(any_store: Store) -> None:
    clock = FakeClock(T0)
    channel = ScriptedChannel("oncall-sms", [DeliveryError("HTTP 503", retryable=True)])
    sender = notifier(any_store, channel, clock, undelivered=UndeliveredNote(TemplateRenderer()))
    await any_store.enqueue([incident_message("opened")], clock.now)
    await sender.deliver_due()  # the gateway fails the first attempt: retry in 30 s
    clock.now += 10
    await any_store.enqueue([incident_message("resolved")], clock.now)  # the service is back
    await sender.deliver_due()  # the gateway works again, but "opened" is not due yet
    assert channel.delivered == []  # so "resolved" waits rather than arriving first
    clock.now += 20
    await sender.deliver_due()
    assert [m.event for m in channel.messages] == ["opened", "resolved"]
    assert "not delivered earlier" not in channel.messages[1].text


async def test_resolved_after_an_undelivered_opened_says_so(any_store: Store) -> None:
    clock = FakeClock(T0)
    refused = DeliveryError("isv.BUSINESS_LIMIT_CONTROL", retryable=False)
    channel = ScriptedChannel("oncall-sms", [refused])
    sender = notifier(any_store, channel, clock, undelivered=UndeliveredNote(TemplateRenderer()))
    opened = incident_message("opened")
    other_person = incident_message("resolved", person="+8613800000002")
    await any_store.enqueue([opened], clock.now)
    await sender.deliver_due()  # refused for good
    clock.now += 600
    await any_store.enqueue([incident_message("resolved"), other_person], clock.now)
    await sender.deliver_due()
    # a pass delivers its messages concurrently: in either order
    by_recipient = {message.recipients: message for message in channel.messages}
    assert sorted(by_recipient) == [("+8613800000001",), ("+8613800000002",)]
    resolved, other = by_recipient[("+8613800000001",)], by_recipient[("+8613800000002",)]
    note = "Opened at 2027-01-15 16:00 Asia/Shanghai (08:00 UTC), not delivered earlier."
    assert resolved.text.startswith(note + "\n\n")
    assert resolved.text.endswith(incident_message("resolved").text)
    last_line = incident_message("resolved").sms.splitlines()[-1]  # incident id: kept whole
    assert resolved.sms.startswith(note + "\n") and resolved.sms.endswith("\n" + last_line)
    assert resolved.html is not None and note in resolved.html
    assert resolved.payload["undelivered"] == [
        {"event": "opened", "queued_at": "2027-01-15T08:00:00+00:00"}
    ]
    assert other == incident_message("resolved", person="+8613800000002")  # it got its opened


async def test_a_webhook_that_fails_its_first_request_gets_opened_then_resolved(
    any_store: Store,
) -> None:
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.json())["event"])
        if len(received) == 1:  # the receiver is overloaded at first
            return web.Response(status=503, headers={"Retry-After": "30"})
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    clock = FakeClock(T0)
    try:
        async with aiohttp.ClientSession() as http:
            channel = WebhookChannel(
                "oncall-sms", WebhookOptions(url=f"http://127.0.0.1:{port}/hook"), http
            )
            sender = Notifier(
                any_store,
                {"oncall-sms": channel},
                NotifierMetrics(CollectorRegistry()),
                retry=RetryPolicy(initial=10, max_delay=600, max_attempts=5),
                wall=clock,
            )
            await any_store.enqueue([incident_message("opened")], clock.now)
            await sender.deliver_due()  # 503, Retry-After 30 s
            clock.now += 10
            await any_store.enqueue([incident_message("resolved")], clock.now)
            await sender.deliver_due()
            assert received == ["opened"]  # "resolved" did not overtake it
            clock.now += 20
            await sender.deliver_due()
    finally:
        await runner.cleanup()
    assert received == ["opened", "opened", "resolved"]


class RobotChannel(ScriptedChannel):
    """A channel type that declares its provider's limit, as the chat robots do."""

    rate_limit = RateLimit(per_minute=20, per_second=5)


async def test_a_lower_configured_limit_wins_over_the_declared_one(store: Store) -> None:
    clock = FakeClock(T0)
    channel = RobotChannel("noc-chat")
    sender = notifier(store, channel, clock, rate_limits={"noc-chat": 3})
    await store.enqueue([message(f"k{i}", "noc-chat") for i in range(30)], clock.now)
    await sender.deliver_due()
    assert len(channel.delivered) == 3
    # a reload that raises the configured limit above the provider's is capped by it
    sender.configure({"noc-chat": channel}, RetryPolicy(), {"noc-chat": 1000})
    clock.now += 60  # the rows wait for the first minute's window to pass
    sent_per_second = []
    for _ in range(10):  # 10 s: at most 5 a second, 20 a minute
        before = len(channel.delivered)
        await sender.deliver_due()
        sent_per_second.append(len(channel.delivered) - before)
        clock.now += 1
    assert sent_per_second == [5, 5, 5, 5, 0, 0, 0, 0, 0, 0]
