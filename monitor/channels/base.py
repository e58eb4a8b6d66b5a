"""What every channel shares: the options base, the channel protocol, HTTP error mapping.

Kept apart from the package ``__init__`` (the registry) so that channel modules can
import it without importing each other.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage
from monitor.probe import describe_error
from monitor.retry_after import retry_after_header

Clock = Callable[[], float]
E164 = r"^\+[1-9]\d{6,14}$"
PhoneNumber = Annotated[str, Field(pattern=E164)]
"""A phone number in E.164 form, e.g. +8613800000000."""


class ChannelOptions(BaseModel):
    """Base of every channel type's options; ``type`` is the discriminator in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipient_kind: ClassVar[str | None] = None
    """The field of an on-call person (``monitor/schedule_config.py``) this channel type
    sends to: ``email``, ``phone`` or ``chat_user_id``; None for a channel that sends to
    no one in particular (a webhook, a file), which gets the person's id."""

    sends_sms: ClassVar[bool] = False
    """The channel delivers the message's SMS text (within ``notifications.sms_max_segments``)."""

    type: str
    language: Literal["en", "zh-CN"] | None = Field(
        None,
        description="Language of this channel's messages when the recipient has none "
        "(default: notifications.language)",
    )

    def warnings(self) -> list[str]:
        """Settings that work but put something at risk (``validate`` prints them)."""
        return []


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A provider's own sending limit, which a channel type declares as the class
    attribute ``rate_limit``: the notifier keeps to it even when the config sets no
    ``notifications.rate_limit_per_minute`` for the channel (and caps a higher one),
    so a storm never gets the channel locked out by the provider."""

    per_minute: int
    per_second: int | None = None


class Channel(Protocol):
    """One configured destination. ``send`` delivers once; the notifier retries.

    A channel type may also declare ``rate_limit: ClassVar[RateLimit]``
    (see :func:`default_rate_limit`)."""

    name: str

    async def send(self, message: RenderedMessage) -> DeliveryReceipt: ...


def default_rate_limit(channel: object) -> RateLimit | None:
    """The provider's limit a channel declares, or None."""
    limit = getattr(channel, "rate_limit", None)
    return limit if isinstance(limit, RateLimit) else None


def recipients(message: RenderedMessage, configured: Iterable[str]) -> tuple[str, ...]:
    """The message's own recipients when it has any, else the channel's list.

    Raises a permanent error when both are empty: retrying cannot invent an address.
    """
    chosen = message.recipients or tuple(configured)
    if not chosen:
        raise DeliveryError(
            "no recipients: set `to` on the channel or recipients on the escalation step",
            retryable=False,
        )
    return chosen


def sms_text(message: RenderedMessage) -> str:
    """The SMS body: the rendered SMS, or the subject when no SMS template produced one."""
    return message.sms or message.subject


def redact(text: str, *secrets: SecretStr | str | None) -> str:
    """Hides secret values a provider might echo back into an error we would log."""
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if value:
            text = text.replace(value, "***")
    return text


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for quoting a provider's reply."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def retry_after(headers: Mapping[str, str], now: Clock = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date);
    None when it is missing or malformed (the notifier's backoff applies)."""
    return retry_after_header(headers, now())


def transport_error(exc: BaseException, what: str) -> DeliveryError:
    """A retryable error for a timeout or a connection problem talking to ``what``.

    Certificate verification failures are permanent: they need an operator
    (``ca_file``, ``tls_verify``), and retrying would only repeat them.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return DeliveryError(f"{what}: {describe_error(exc)}", retryable=False)
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts subclass it too
        return DeliveryError(f"{what}: timed out", retryable=True)
    return DeliveryError(f"{what}: {describe_error(exc)}", retryable=True)


def http_status_error(status: int, headers: Mapping[str, str], detail: str, what: str,
                      now: Clock = time.time) -> DeliveryError:  # fmt: skip
    """The generic HTTP mapping: 408, 425, 429 and 5xx retryable, other statuses permanent."""
    retryable = status in (408, 425, 429) or status >= 500
    wait = retry_after(headers, now) if status in (429, 503) else None
    text = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    return DeliveryError(text, retryable=retryable, retry_after=wait)


async def json_object(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The response's JSON object, or ``{}`` for anything else (a proxy's HTML error page)."""
    try:
        document = await resp.json(content_type=None)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (or the system's CAs); unverified if asked."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # a missing or unreadable CA file is a configuration problem
        raise DeliveryError(
            f"cannot read ca_file {ca_file}: {exc.strerror or exc}", retryable=False
        ) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
