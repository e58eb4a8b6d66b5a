"""``dingtalk``: a DingTalk (钉钉) custom group robot, markdown with @mentions, signed.

With "加签" (signing) enabled on the robot, every request carries ``timestamp`` (ms)
and ``sign`` = Base64(HMAC-SHA256(key=secret, msg="{timestamp}\\n{secret}")),
URL-encoded, in the query; DingTalk refuses a timestamp more than an hour off. The
access token and the secret are secrets. A mention needs both the number in
``at.atMobiles`` *and* ``@number`` in the markdown text, or DingTalk silently
drops it. DingTalk answers HTTP 200 with ``errcode``; 310000 covers several
refusals (keyword, timestamp, signature, IP allow-list), told apart by ``errmsg``.
A robot takes 20 messages a minute and is throttled for 10 minutes past that
(130101), so 20 a minute is this channel's default rate limit. The body may hold
20,000 bytes; the text is cut to fit, keeping its last line (the ack link).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote_plus

import aiohttp
from pydantic import Field, HttpUrl, SecretStr
from yarl import URL

from monitor.channels.base import ChannelOptions, Clock, RateLimit
from monitor.channels.chat import (
    MOBILE,
    Robot,
    VendorCode,
    chat_markdown,
    fit_bytes,
    json_len,
    mentioned_mobiles,
)
from monitor.notify.message import DeliveryReceipt, RenderedMessage

BODY_LIMIT = 20000
LOCKOUT = 600.0  # DingTalk throttles a robot for 10 minutes past 20 messages a minute
# DingTalk's codes as china-oncall.md gives them (the robot doc's error list, 130101's
# 10-minute lock, 460101 from prometheus-webhook-dingtalk #222). Any other code is named
# "unknown code" and treated as permanent: a person looks at it.
CODES = MappingProxyType(
    {
        130101: VendorCode("send too fast: robot throttled for 10 minutes", True, LOCKOUT),
        310000: VendorCode("refused by the robot's security settings", retryable=False),
        460101: VendorCode("message too large (over 20,000 bytes)", retryable=False),
    }
)
# 310000's causes, by the text DingTalk sends with it.
SECURITY_CAUSES = (
    ("keywords not in content", "keyword missing: add the robot's keyword to the template"),
    ("invalid timestamp", "invalid timestamp: check this host's clock"),
    ("sign not match", "bad signature: check the channel's secret"),
    ("whitelist", "IP not allowed: add this host's address to the robot's IP list"),
)


def refine(code: int, vendor_text: str) -> VendorCode | None:
    """Names 310000 by its cause; all of them need an operator."""
    if code != 310000:
        return None
    lowered = vendor_text.lower()
    for marker, name in SECURITY_CAUSES:
        if marker in lowered:
            return VendorCode(name, retryable=False)
    return None


def sign(timestamp_ms: int, secret: str) -> str:
    """DingTalk's signature, before URL encoding."""
    string_to_sign = f"{timestamp_ms}\n{secret}"
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "phone"
    type: Literal["dingtalk"] = Field("dingtalk", description="Channel type")
    access_token: SecretStr = Field(description="The access_token of the robot's webhook URL")
    secret: SecretStr | None = Field(
        None, description="The robot's signing secret (SEC…), when signing is enabled"
    )
    mention_mobiles: list[Annotated[str, Field(pattern=MOBILE)]] = Field(
        [], description="Mobile numbers to @mention in every message"
    )
    mention_user_ids: list[str] = Field([], description="DingTalk user ids to @mention")
    mention_all: bool = Field(False, description="@everyone in the group")
    endpoint: HttpUrl = Field(
        HttpUrl("https://oapi.dingtalk.com/robot/send"), description="API URL"
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")

    def warnings(self) -> list[str]:
        if self.secret is None:
            return ["no secret: enable signing (加签) on the robot so a leaked token is not enough"]
        return []


class DingTalkChannel:
    """One signed POST per message; the receipt is DingTalk's ``errmsg``."""

    rate_limit: ClassVar[RateLimit] = RateLimit(per_minute=20)

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        self.robot = Robot(
            "DingTalk robot", name, CODES, "errcode", "errmsg",
            (options.access_token, options.secret), options.timeout, now, refine,
        )  # fmt: skip

    def body(self, message: RenderedMessage) -> dict[str, Any]:
        """Markdown with the mentions both in ``at`` and as ``@number`` in the text."""
        opts = self.options
        mobiles = mentioned_mobiles(message, opts.mention_mobiles)
        mentions = " ".join(f"@{person}" for person in (*mobiles, *opts.mention_user_ids))
        at = {"atMobiles": mobiles, "atUserIds": list(opts.mention_user_ids),
              "isAtAll": opts.mention_all}  # fmt: skip
        title = message.subject[:64]
        skeleton = {"msgtype": "markdown", "markdown": {"title": title, "text": ""}, "at": at}
        room = BODY_LIMIT - len(json.dumps(skeleton, ensure_ascii=False).encode())
        tail = f"\n\n{mentions}" if mentions else ""
        text = fit_bytes(chat_markdown(message), room - json_len(tail), json_len) + tail
        return {**skeleton, "markdown": {"title": title, "text": text}}

    def url(self) -> URL:
        """The webhook URL with the token and, when signing, the timestamp and signature."""
        opts = self.options
        query = f"access_token={quote_plus(opts.access_token.get_secret_value())}"
        if opts.secret is not None:
            timestamp = int(self.now() * 1000)
            signature = quote_plus(sign(timestamp, opts.secret.get_secret_value()))
            query += f"&timestamp={timestamp}&sign={signature}"
        # encoded=True: the signature is sent exactly as encoded here.
        return URL(f"{str(opts.endpoint).rstrip('/')}?{query}", encoded=True)

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        return await self.robot.post_json(self.http, self.url(), self.body(message))
