"""``feishu``: a Feishu (飞书) / Lark custom bot, an interactive card, signed.

The card has a header in the status colour (red down, orange degraded, blue
acknowledged, green resolved) with the subject, the facts from the chat template
as ``lark_md``, and buttons to the acknowledge link and the incident page (their
labels are the template's link labels; the link lines themselves move into the
buttons). With signature verification on, the body carries ``timestamp``
(seconds, as a string; within an hour of Feishu's clock) and ``sign`` =
Base64(HMAC-SHA256(key="{timestamp}\\n{secret}", msg=b"")). The webhook token
and the secret are secrets. Feishu answers HTTP 200 with ``code`` in the body;
anything but 0 is a failure. A bot takes 100 messages a minute and 5 a second
(code 11232 past that), this channel's default rate limit; the body may hold
20 KB, so the card text is cut to fit, keeping its last line. Lark
(``open.larksuite.com``) is the same API on another ``host``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr

from monitor.channels.base import ChannelOptions, Clock, RateLimit
from monitor.channels.chat import (
    Robot,
    VendorCode,
    chat_markdown,
    fit_bytes,
    json_len,
    mentioned_user_ids,
)
from monitor.notify.message import DeliveryReceipt, RenderedMessage

BODY_LIMIT = 20000
# Feishu's codes as china-oncall.md gives them (the Lark custom-bot guide). Any other
# code is named "unknown code" and treated as permanent: a person looks at it.
CODES = MappingProxyType(
    {
        9499: VendorCode("bad request", retryable=False),
        11232: VendorCode("rate limited (100 a minute, 5 a second)", True, 60.0),
        19021: VendorCode("bad signature or timestamp: check the secret and the clock", False),
        19022: VendorCode("IP not allowed: add this host to the bot's IP list", False),
        19024: VendorCode("keyword missing: add the bot's keyword to the template", False),
    }
)
COLOURS = {"resolved": "green", "acknowledged": "blue"}
STATUS_COLOURS = {"down": "red", "degraded": "orange"}
_LINK_LINE = re.compile(r"^\[([^\]]+)\]\((\S+)\)$")


def sign(timestamp_s: int, secret: str) -> str:
    """Feishu's signature: the key is "timestamp\\nsecret", the message empty."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "chat_user_id"
    type: Literal["feishu"] = Field("feishu", description="Channel type")
    token: SecretStr = Field(description="The token at the end of the bot's webhook URL")
    secret: SecretStr | None = Field(
        None, description="The bot's signing secret, when signature verification is on"
    )
    host: HttpUrl = Field(
        HttpUrl("https://open.feishu.cn"),
        description="API host: https://open.feishu.cn, or https://open.larksuite.com for Lark",
    )
    mention_user_ids: list[str] = Field(
        [], description="open_ids (ou_…) to @mention; 'all' mentions everyone"
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")

    def warnings(self) -> list[str]:
        if self.secret is None:
            return ["no secret: turn on signature verification so a leaked token is not enough"]
        return []


def colour(message: RenderedMessage) -> str:
    """The card header's colour: the event's (resolved, acknowledged) or the status's."""
    return COLOURS.get(message.event) or STATUS_COLOURS.get(message.status, "grey")


def _button(label: str, url: str, kind: str) -> dict[str, Any]:
    return {"tag": "button", "text": {"tag": "plain_text", "content": label},
            "type": kind, "url": url}  # fmt: skip


class FeishuChannel:
    """One POST per message carrying an interactive card; the receipt is Feishu's ``msg``."""

    rate_limit: ClassVar[RateLimit] = RateLimit(per_minute=100, per_second=5)

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        self.robot = Robot(
            "Feishu bot", name, CODES, "code", "msg",
            (options.token, options.secret), options.timeout, now,
        )  # fmt: skip

    def card(self, message: RenderedMessage, content: str) -> dict[str, Any]:
        """The interactive card around ``content`` (lark_md)."""
        buttons = _buttons(message, content)
        elements: list[dict[str, Any]] = [
            {"tag": "div", "text": {"tag": "lark_md", "content": content}}
        ]
        if buttons:
            elements.append({"tag": "action", "actions": buttons})
        return {
            "config": {"wide_screen_mode": True},
            "header": {
                "template": colour(message),
                "title": {"tag": "plain_text", "content": message.subject},
            },
            "elements": elements,
        }

    def body(self, message: RenderedMessage) -> dict[str, Any]:
        """The signed request body, its card text cut to the body limit."""
        opts = self.options
        text = _without_link_lines(message, chat_markdown(message))
        users = mentioned_user_ids(message, opts.mention_user_ids)
        mentions = " ".join(f"<at id={user}></at>" for user in users)
        tail = f"\n\n{mentions}" if mentions else ""
        body: dict[str, Any] = {}
        if opts.secret is not None:
            timestamp = int(self.now())
            body = {"timestamp": str(timestamp),
                    "sign": sign(timestamp, opts.secret.get_secret_value())}  # fmt: skip
        skeleton = {**body, "msg_type": "interactive", "card": self.card(message, "")}
        room = BODY_LIMIT - len(json.dumps(skeleton, ensure_ascii=False).encode())
        content = fit_bytes(text, room - json_len(tail), json_len) + tail
        return {**skeleton, "card": self.card(message, content)}

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        url = f"{str(self.options.host).rstrip('/')}/open-apis/bot/v2/hook/"
        url += self.options.token.get_secret_value()
        return await self.robot.post_json(self.http, url, self.body(message))


def _buttons(message: RenderedMessage, markdown: str) -> list[dict[str, Any]]:
    labels = _link_labels(chat_markdown(message))
    buttons = []
    if message.ack_url:
        buttons.append(_button(labels.get(message.ack_url, "Acknowledge"), message.ack_url,
                               "danger"))  # fmt: skip
    if message.incident_url:
        label = labels.get(message.incident_url, "Incident page")
        buttons.append(_button(label, message.incident_url, "default"))
    return buttons


def _link_labels(markdown: str) -> dict[str, str]:
    """url → label of the template's lines that are one link each."""
    found = (_LINK_LINE.match(line.strip()) for line in markdown.splitlines())
    return {match.group(2): match.group(1) for match in found if match}


def _without_link_lines(message: RenderedMessage, markdown: str) -> str:
    """The text without the lines the buttons replace (the ack link, the incident page)."""
    urls = {message.ack_url, message.incident_url} - {None}
    lines = [
        line for line in markdown.splitlines()
        if not ((m := _LINK_LINE.match(line.strip())) and m.group(2) in urls)
    ]  # fmt: skip
    return "\n".join(lines).strip()
