"""What the group-chat robots (``wecom``, ``dingtalk``, ``feishu``) share.

All three answer HTTP 200 when they refuse a message: only the code in the body
tells a delivered message from a rejected one. Each channel maps its codes to a
:class:`VendorCode` (a name for the log, and whether trying later can help);
:func:`post_json` sends the body and turns the answer into a receipt or a
``DeliveryError`` naming the code. Their size limits are in bytes of UTF-8
(a Chinese character is 3), so :func:`fit_bytes` cuts by bytes, on a character
boundary, keeping the last line (the acknowledge link) whole.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from monitor.channels.base import Clock, http_status_error, redact, shorten, transport_error
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

log = logging.getLogger(__name__)

ELLIPSIS = "…"
MOBILE = r"^\+?[0-9]{6,15}$"
"""A mobile number to mention: 13800000000 or +8613800000000."""


@dataclass(frozen=True, slots=True)
class VendorCode:
    """What a vendor's error code means: ``name`` goes into the log and the error."""

    name: str
    retryable: bool
    retry_after: float | None = None


def utf8_len(text: str) -> int:
    return len(text.encode())


def json_len(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string (escapes included, no quotes)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _prefix(text: str, budget: int, measure: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` (whole characters) that ``measure`` fits in ``budget``."""
    low, high = 0, len(text)
    while low < high:  # bounded: halves each time
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def fit_bytes(text: str, limit: int, measure: Callable[[str], int] = utf8_len) -> str:
    """``text`` within ``limit`` bytes: the last line (the acknowledge link) is kept whole
    and the lines before it are cut, on a character boundary, with an ellipsis. Cutting
    a str by characters never splits a UTF-8 sequence."""
    if measure(text) <= limit:
        return text
    head, newline, last = text.rpartition("\n")
    if not newline or measure(last) + measure(ELLIPSIS + "\n") > limit:
        return _prefix(text, limit - measure(ELLIPSIS), measure) + ELLIPSIS
    budget = limit - measure(last) - measure(ELLIPSIS + "\n")
    return _prefix(head, budget, measure).rstrip() + ELLIPSIS + "\n" + last


def strip_country(mobile: str) -> str:
    """The robots mention mainland mobiles without the country code: +8613800000000 →
    13800000000."""
    return mobile[3:] if mobile.startswith("+86") else mobile.lstrip("+")


def mentioned_mobiles(message: RenderedMessage, configured: Iterable[str]) -> list[str]:
    """The channel's mentions plus a message recipient that is a phone number (an
    escalation step's ``recipients``), without the country code, each once."""
    people = [*configured, *(r for r in message.recipients if r.lstrip("+").isdigit())]
    return list(dict.fromkeys(strip_country(person) for person in people))


def mentioned_user_ids(message: RenderedMessage, configured: Iterable[str]) -> list[str]:
    """The channel's user-id mentions plus a message recipient that is neither a phone
    number nor an e-mail address (the chat user id of the person on call, paged through
    a schedule), each once."""
    ids = [r for r in message.recipients if not r.lstrip("+").isdigit() and "@" not in r]
    return list(dict.fromkeys(person for person in (*configured, *ids) if person))


def chat_markdown(message: RenderedMessage) -> str:
    """The rendered chat template, or the text when an operator's template set has none."""
    return message.chat or message.text or message.subject


@dataclass(frozen=True, slots=True)
class Robot:
    """One chat robot's endpoint: how to name it, read its answer and hide its secrets."""

    what: str  # "WeCom robot", for errors and logs
    channel: str  # the channel's name in the config
    codes: Mapping[int, VendorCode]
    code_field: str  # "errcode" or "code"
    message_field: str  # "errmsg" or "msg"
    secrets: tuple[SecretStr | str | None, ...]
    timeout: float
    now: Clock = time.time
    # For vendors whose one code covers several causes (DingTalk 310000): the cause by text.
    refine: Callable[[int, str], VendorCode | None] | None = None

    async def post_json(
        self, http: aiohttp.ClientSession, url: str | URL, body: Mapping[str, Any]
    ) -> DeliveryReceipt:
        """POST ``body``; a non-zero code in the answer (even with HTTP 200) is an error."""
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "csp-monitor"}
        try:
            async with http.post(
                url, data=data, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:  # fmt: skip
                status, resp_headers = resp.status, resp.headers
                text = (await resp.content.read(65536)).decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = transport_error(exc, self.what)  # an invalid URL error quotes the token
            raise DeliveryError(
                redact(str(error), *self.secrets), retryable=error.retryable
            ) from None
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            detail = shorten(redact(text, *self.secrets))
            if 200 <= status < 300:  # a proxy's page, not the robot's answer
                raise DeliveryError(f"{self.what}: answer is not JSON: {detail}", retryable=True)
            raise http_status_error(status, resp_headers, detail, self.what, self.now)
        code = document.get(self.code_field)
        vendor_text = shorten(redact(str(document.get(self.message_field) or ""), *self.secrets))
        if code == 0 and 200 <= status < 300:
            return DeliveryReceipt(None, f"{self.code_field} 0: {vendor_text}")
        if not isinstance(code, int):
            detail = f"no {self.code_field} in the answer: {vendor_text}"
            raise http_status_error(status, resp_headers, detail, self.what, self.now)
        raise self.code_error(code, vendor_text)

    def code_error(self, code: int, vendor_text: str) -> DeliveryError:
        """The error for a vendor code, logged with its name (the notifier logs the rest)."""
        known = (self.refine(code, vendor_text) if self.refine else None) or self.codes.get(code)
        name = known.name if known else "unknown code"
        retryable = known.retryable if known else False  # an unknown refusal needs a person
        action = "none: the notifier tries again" if retryable else "fix the channel settings"
        log.warning(
            "event=chat_refused channel=%s vendor=%r code=%d code_name=%r retryable=%s action=%r",
            self.channel, self.what, code, name, retryable, action,
        )  # fmt: skip
        return DeliveryError(
            f"{self.what} refused the message: {name} ({code}: {vendor_text})",
            retryable=retryable,
            retry_after=known.retry_after if known else None,
        )


def plain_text(markdown: str) -> str:
    """The chat markdown as plain text (WeCom ``text`` messages): no ``**``, links as
    ``label: url``."""
    text = markdown.replace("**", "")
    return _LINK.sub(lambda m: f"{m.group(1)}: {m.group(2)}", text)


_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
