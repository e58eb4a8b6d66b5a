"""The notifier over a real SQLite outbox: retries, permanent failures, rate limits, leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage
from monitor.notify.notifier import Notifier, NotifierMetrics, RetryPolicy
from monitor.store import OutboxStatus, Store
from tests.conftest import FakeClock

T0 = 1_800_000_000.0


class ScriptedChannel:
    """A channel whose answers a test scripts: one fake, at the channel boundary."""

    def __init__(self, name: str, answers: list[Exception | None] | None = None) -> None:
        self.name = name
        self.answers = list(answers or [])
        self.delivered: list[str] = []

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.delivered.append(message.dedup_key)
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
