"""The notifier: delivers the persisted outbox through channels, once each.

Retry, backoff, rate limits and dedup live here and nowhere else:

* every message is a row in the store's outbox, written in the same
  transaction as the incident change that caused it, so nothing decided is
  lost by a crash;
* a sender claims due rows with a lease; a crash mid-send lets the lease run
  out and the row is tried again (channels get the dedup key, so a receiver
  can drop the rare duplicate: e-mail Message-ID, webhook Idempotency-Key,
  SMS provider session ids);
* a retryable failure is tried again after an exponential backoff (or the
  provider's Retry-After); a permanent one is marked failed and reported;
* a channel over its per-minute rate limit leaves the rest of its rows for
  later;
* an incident's messages reach each recipient in the order they were queued
  (the store does not hand out a message while an earlier one to the same
  recipient is pending); when an earlier one failed for good, the later one
  says so (see ``undelivered``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.channels.base import Channel, default_rate_limit
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage
from monitor.notify.undelivered import UndeliveredNote
from monitor.store.records import OutboxRow

log = logging.getLogger(__name__)


class Outbox(Protocol):
    """The part of the store the notifier uses."""

    async def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[OutboxRow]: ...
    async def mark_sent(self, outbox_id: int, receipt: DeliveryReceipt, at: float) -> bool: ...
    async def mark_retry(self, outbox_id: int, error: str, next_attempt_at: float) -> bool: ...
    async def mark_failed(self, outbox_id: int, error: str, at: float) -> bool: ...
    async def failed_before(self, row: OutboxRow) -> list[OutboxRow]: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 30.0
    max_delay: float = 1800.0
    max_attempts: int = 20

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.initial * 2 ** max(0, attempts - 1))
        return float(max(backoff, retry_after or 0.0))


@dataclass(slots=True)
class RateLimiter:
    """At most ``per_minute`` sends in any 60 s and, when set, ``per_second`` in any 1 s
    (sliding windows)."""

    per_minute: int
    per_second: int | None = None
    sent: deque[float] = field(default_factory=deque)

    def next_free(self, now: float) -> float:
        """``now`` if a send is allowed now, else when the send that blocks it leaves its
        window."""
        while self.sent and self.sent[0] <= now - 60.0:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute:
            return self.sent[-self.per_minute] + 60.0
        if self.per_second is not None and len(self.sent) >= self.per_second:
            blocking = self.sent[-self.per_second]
            if blocking > now - 1.0:
                return blocking + 1.0
        return now

    def take(self, now: float) -> None:
        self.sent.append(now)


def _limiters(
    channels: Mapping[str, Channel],
    configured: Mapping[str, int],
    previous: Mapping[str, RateLimiter],
) -> dict[str, RateLimiter]:
    """One limiter per limited channel: the configured per-minute limit, capped by the
    provider's own limit the channel type declares (and its per-second limit). A limiter
    whose limits did not change keeps its window (a reload mid-storm stays within them)."""
    limiters: dict[str, RateLimiter] = {}
    for name in {*configured, *channels}:
        declared = default_rate_limit(channels.get(name))
        limits = [v for v in (configured.get(name), declared and declared.per_minute) if v]
        if not limits:
            continue
        limiter = RateLimiter(min(limits), declared.per_second if declared else None)
        old = previous.get(name)
        if old is not None and (old.per_minute, old.per_second) == (
            limiter.per_minute,
            limiter.per_second,
        ):
            limiter = old
        limiters[name] = limiter
    return limiters


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "csp_monitor_notifications",
            "Notification delivery attempts by channel and result "
            "(sent, retrying, failed, rate_limited)",
            ["channel", "result"],
            registry=registry,
        )
        self.last_success = Gauge(
            "csp_monitor_notification_last_success_timestamp_seconds",
            "Unix time of the last message a channel delivered",
            ["channel"],
            registry=registry,
        )


class Notifier:
    def __init__(
        self,
        outbox: Outbox,
        channels: Mapping[str, Channel],
        metrics: NotifierMetrics,
        *,
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, int] | None = None,
        wall: Callable[[], float] = time.time,
        lease_seconds: float = 120.0,
        batch: int = 50,
        undelivered: UndeliveredNote | None = None,
    ) -> None:
        self._outbox = outbox
        self.channels = dict(channels)
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._limits = _limiters(self.channels, rate_limits or {}, {})
        self._wall = wall
        self._lease = lease_seconds
        self._batch = batch
        self.undelivered = undelivered
        self._wake = asyncio.Event()
        for name in self.channels:
            for result in ("sent", "retrying", "failed", "rate_limited"):
                metrics.deliveries.labels(name, result)

    def wake(self) -> None:
        """New rows were queued: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def configure(
        self, channels: Mapping[str, Channel], retry: RetryPolicy, rate_limits: Mapping[str, int]
    ) -> None:
        """A reload's channels and settings; a rate limit that did not change keeps its window."""
        self.channels = dict(channels)
        self._retry = retry
        self._limits = _limiters(self.channels, rate_limits, self._limits)
        for name in self.channels:
            for result in ("sent", "retrying", "failed", "rate_limited"):
                self._metrics.deliveries.labels(name, result)

    async def run(self, stop: asyncio.Event, poll_interval: float) -> None:
        """Deliver until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store may be briefly unavailable: try again next poll
                log.exception(
                    "event=outbox_pass_failed action=%r",
                    "check the store; delivery resumes by itself",
                )
            self._wake.clear()
            waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(
                    waiters, timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:  # also when cancelled: leave no waiter behind
                for waiter in waiters:
                    waiter.cancel()

    async def deliver_due(self) -> int:
        """One pass over the due rows; returns how many were handled."""
        handled = 0
        for _ in range(100):  # bounded: a pass never spins forever
            rows = await self._outbox.claim_due(self._wall(), self._batch, self._lease)
            if not rows:
                break
            await asyncio.gather(*(self._deliver(row) for row in rows))
            handled += len(rows)
        return handled

    async def _deliver(self, row: OutboxRow) -> None:
        now = self._wall()
        channel = self.channels.get(row.channel)
        if channel is None:
            await self._outbox.mark_failed(
                row.id, f"channel {row.channel!r} is not configured any more", now
            )
            self._metrics.deliveries.labels(row.channel, "failed").inc()
            log.error(
                "event=notification_failed channel=%s dedup=%s reason=%r",
                row.channel,
                row.dedup_key,
                "channel removed from the config",
            )
            return
        limiter = self._limits.get(row.channel)
        if limiter is not None:
            free_at = limiter.next_free(now)
            if free_at > now:
                await self._outbox.mark_retry(row.id, "rate limited", free_at)
                self._metrics.deliveries.labels(row.channel, "rate_limited").inc()
                return
            limiter.take(now)
        try:
            receipt = await channel.send(await self._with_missed(row))
        except DeliveryError as exc:
            await self._failed(row, exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel bug: keep the message, try again later
            log.exception("event=channel_error channel=%s dedup=%s", row.channel, row.dedup_key)
            await self._failed(
                row, DeliveryError(f"channel error: {type(exc).__name__}", retryable=True)
            )
            return
        await self._outbox.mark_sent(row.id, receipt, self._wall())
        self._metrics.deliveries.labels(row.channel, "sent").inc()
        self._metrics.last_success.labels(row.channel).set(self._wall())
        log.info(
            "event=notification_sent channel=%s event_type=%s incident=%s dedup=%s receipt=%s",
            row.channel,
            row.message.event,
            row.message.incident_id,
            row.dedup_key,
            receipt.provider_id,
        )

    async def _with_missed(self, row: OutboxRow) -> RenderedMessage:
        """The row's message, telling its recipient which earlier messages of the incident
        never reached them (known only now, at send time)."""
        message, note = row.message, self.undelivered
        if note is None or message.incident_id is None or not note.wants(message.event):
            return message
        missed = await self._outbox.failed_before(row)
        if missed:
            log.info(
                "event=notification_notes_undelivered channel=%s dedup=%s undelivered=%s",
                row.channel,
                row.dedup_key,
                ",".join(m.message.event for m in missed),
            )
        return note.add(message, missed)

    async def _failed(self, row: OutboxRow, error: DeliveryError) -> None:
        now = self._wall()
        if error.retryable and row.attempts < self._retry.max_attempts:
            next_at = now + self._retry.delay(row.attempts, error.retry_after)
            await self._outbox.mark_retry(row.id, str(error), next_at)
            self._metrics.deliveries.labels(row.channel, "retrying").inc()
            log.warning(
                "event=notification_retry channel=%s dedup=%s attempt=%d "
                "next_in_seconds=%.0f error=%r",
                row.channel,
                row.dedup_key,
                row.attempts,
                next_at - now,
                str(error),
            )
            return
        await self._outbox.mark_failed(row.id, str(error), now)
        self._metrics.deliveries.labels(row.channel, "failed").inc()
        why = "permanent error" if not error.retryable else "out of retries"
        log.error(
            "event=notification_failed channel=%s dedup=%s attempts=%d reason=%r "
            "error=%r action=%r",
            row.channel,
            row.dedup_key,
            row.attempts,
            why,
            str(error),
            "fix the channel settings; the incident timeline shows what was not delivered",
        )
