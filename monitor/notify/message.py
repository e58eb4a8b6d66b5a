"""The contract between the notifier and channels.

A channel is one module in ``monitor/channels/`` with an ``Options`` model and a
class whose only job is ``async def send(message) -> DeliveryReceipt``. It
raises ``DeliveryError(retryable=...)`` and nothing else for a failed
delivery; retries, backoff, rate limits and dedup live once, in the notifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One notification, rendered for every format a channel might use."""

    dedup_key: str  # unique per incident, event, escalation step, channel and recipient
    channel: str  # the channel's name in the config
    event: str  # opened, escalated, reminder, acknowledged, resolved, vendor_ticket; report
    recipients: tuple[str, ...]  # addresses or E.164 numbers; empty: the channel's own list
    subject: str
    text: str
    html: str | None = None
    sms: str = ""
    payload: dict[str, Any] = field(default_factory=dict)  # webhook JSON body
    incident_id: str | None = None
    chat: str = ""  # group-chat markdown; the last line holds the acknowledge link
    status: str = ""  # the incident's status (down, degraded) for a chat card's colour
    ack_url: str | None = None  # for chat buttons; None when the event needs no ack
    incident_url: str | None = None
    # (file name, content type, base64 body): the monthly report's PDF, for e-mail
    attachments: tuple[tuple[str, str, str], ...] = ()
    voice: str = ""  # text-to-speech for a voice call; "" when the event has no voice template
    language: str = "en"  # the language it was rendered in (en, zh-CN)


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What the provider gave back: its message id(s), for the audit trail."""

    provider_id: str | None
    detail: str = ""


class DeliveryError(Exception):
    """A delivery that failed; ``retryable`` says whether trying later can help.

    Retryable: timeouts, connection errors, 5xx, 429 (with ``retry_after`` when
    the provider says). Permanent: bad credentials, invalid number or address,
    a rejected template. The message must never contain a secret.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
