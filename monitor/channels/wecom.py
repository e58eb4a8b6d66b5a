"""``wecom``: a WeCom (企业微信) group robot webhook, markdown or text.

The key in the webhook URL is the only credential (anyone holding it can post to
the group), so it is a secret and never appears in logs or errors. WeCom answers
HTTP 200 with ``errcode`` in the body; anything but 0 is a failure. Markdown
content may hold 4096 bytes and text 2048 (UTF-8; a Chinese character is 3): the
message is cut to fit, keeping its last line, the acknowledge link. Mentions: a
text message carries ``mentioned_mobile_list`` and ``mentioned_list``; markdown
can mention only by user id (``<@userid>`` in the content). A robot takes 20
messages a minute, which is this channel's default rate limit.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr, model_validator
from yarl import URL

from monitor.channels.base import ChannelOptions, Clock, RateLimit
from monitor.channels.chat import (
    MOBILE,
    Robot,
    VendorCode,
    chat_markdown,
    fit_bytes,
    mentioned_mobiles,
    mentioned_user_ids,
    plain_text,
    utf8_len,
)
from monitor.notify.message import DeliveryReceipt, RenderedMessage

MARKDOWN_LIMIT = 4096
TEXT_LIMIT = 2048
# WeCom's codes. From china-oncall.md (the robot doc, work.weixin.qq.com/api/doc/90000/
# 90136/91770): 93000 and 45009. From a copy of WeCom's global error-code list
# (developer.work.weixin.qq.com/document/path/90313, read in a third-party mirror, so
# unconfirmed): -1 "system busy, retry later" and 40008 "invalid msgtype". Any other
# code is named "unknown code" and treated as permanent: a person looks at it.
CODES = MappingProxyType(
    {
        -1: VendorCode("system busy", retryable=True),
        45009: VendorCode("api freq out of limit (20 messages a minute)", True, 60.0),
        93000: VendorCode("invalid webhook key: check the channel's key", retryable=False),
        40008: VendorCode("invalid message type", retryable=False),
    }
)


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "chat_user_id"
    type: Literal["wecom"] = Field("wecom", description="Channel type")
    key: SecretStr = Field(
        description="The robot's webhook key (the key= value of its URL; a secret)"
    )
    msgtype: Literal["markdown", "text"] = Field(
        "markdown", description="markdown (formatted) or text (mentions by mobile number)"
    )
    mention_mobiles: list[Annotated[str, Field(pattern=MOBILE)]] = Field(
        [], description="Mobile numbers to @mention (text messages only)"
    )
    mention_user_ids: list[str] = Field(
        [], description="WeCom user ids to @mention; '@all' mentions everyone (text only)"
    )
    endpoint: HttpUrl = Field(
        HttpUrl("https://qyapi.weixin.qq.com/cgi-bin/webhook/send"), description="API URL"
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")

    @model_validator(mode="after")
    def _mentions_fit_msgtype(self) -> Options:
        if self.msgtype == "markdown" and self.mention_mobiles:
            raise ValueError(
                "mention_mobiles needs msgtype: text (WeCom markdown mentions only by "
                "user id: use mention_user_ids)"
            )
        if self.msgtype == "markdown" and "@all" in self.mention_user_ids:
            raise ValueError("mention_user_ids: '@all' works only with msgtype: text")
        return self


class WeComChannel:
    """One POST per message to the group; the receipt is WeCom's ``errmsg``."""

    rate_limit: ClassVar[RateLimit] = RateLimit(per_minute=20)

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.robot = Robot(
            "WeCom robot", name, CODES, "errcode", "errmsg", (options.key,), options.timeout, now
        )

    def body(self, message: RenderedMessage) -> dict[str, Any]:
        """The request body: markdown (mentions as ``<@userid>``) or text with mention lists."""
        opts = self.options
        markdown = chat_markdown(message)
        if opts.msgtype == "markdown":
            users = mentioned_user_ids(message, opts.mention_user_ids)
            mentions = "".join(f"<@{user}>" for user in users)
            # The mentions follow the cut text (which keeps its last line, the ack link).
            room = MARKDOWN_LIMIT - (utf8_len(mentions) + 2 if mentions else 0)
            content = fit_bytes(markdown, room) + (f"\n\n{mentions}" if mentions else "")
            return {"msgtype": "markdown", "markdown": {"content": content}}
        text: dict[str, Any] = {"content": fit_bytes(plain_text(markdown), TEXT_LIMIT)}
        if users := mentioned_user_ids(message, opts.mention_user_ids):
            text["mentioned_list"] = users
        if mobiles := mentioned_mobiles(message, opts.mention_mobiles):
            text["mentioned_mobile_list"] = mobiles
        return {"msgtype": "text", "text": text}

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        url = URL(str(self.options.endpoint)).with_query(key=self.options.key.get_secret_value())
        return await self.robot.post_json(self.http, url, self.body(message))
