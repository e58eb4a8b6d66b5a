"""Notification channels: one module per kind, behind one ``send()``.

Each module holds an ``Options`` model (a :class:`~monitor.channels.base.ChannelOptions`
with a ``type: Literal["<kind>"]`` discriminator, every field described, secrets as
``SecretStr``) and a channel class built as ``Channel(name, options, http)`` with
one coroutine, ``send(message) -> DeliveryReceipt``, which raises only
``DeliveryError(retryable=..., retry_after=...)``. Channels deliver once: retries,
backoff, rate limits and dedup live in the notifier.

The notifier calls ``send`` once per recipient (the dedup key names the recipient)
and passes that recipient in ``message.recipients``; a channel falls back to its own
``to`` list when the message names nobody.

A provider with its own sending limit (the chat robots) declares it on the class,
``rate_limit: ClassVar[RateLimit]``; the notifier keeps to it (see
:class:`~monitor.channels.base.RateLimit`).

Adding a channel type touches three places:

1. ``monitor/channels/<kind>.py`` with ``Options`` and the channel class;
2. ``tests/test_channel_<kind>.py``: a real local server where one is cheap
   (aiosmtpd, aiohttp.web), ``aioresponses`` for a third-party API, with its
   error answers and, for signed APIs, the signature recomputed from the spec;
3. one line in :data:`CHANNEL_TYPES` below. The config's discriminated union
   (:func:`options_union`) and :func:`build_channel` read it from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Union

import aiohttp
from pydantic import Field

from monitor.channels import (
    aliyun,
    aliyun_voice,
    dingtalk,
    email,
    feishu,
    file,
    tencent,
    tencent_voice,
    twilio,
    webhook,
    wecom,
)
from monitor.channels.base import Channel, ChannelOptions

__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelOptions",
    "ChannelType",
    "build_channel",
    "options_union",
]


@dataclass(frozen=True, slots=True)
class ChannelType:
    """A channel kind: its options model and the class that sends."""

    options: type[ChannelOptions]
    factory: Callable[[str, Any, aiohttp.ClientSession], Channel]


CHANNEL_TYPES: Mapping[str, ChannelType] = MappingProxyType(
    {
        "file": ChannelType(file.Options, file.FileChannel),
        "email": ChannelType(email.Options, email.EmailChannel),
        "webhook": ChannelType(webhook.Options, webhook.WebhookChannel),
        "twilio": ChannelType(twilio.Options, twilio.TwilioChannel),
        "aliyun": ChannelType(aliyun.Options, aliyun.AliyunChannel),
        "tencent": ChannelType(tencent.Options, tencent.TencentChannel),
        "wecom": ChannelType(wecom.Options, wecom.WeComChannel),
        "dingtalk": ChannelType(dingtalk.Options, dingtalk.DingTalkChannel),
        "feishu": ChannelType(feishu.Options, feishu.FeishuChannel),
        "aliyun_voice": ChannelType(aliyun_voice.Options, aliyun_voice.AliyunVoiceChannel),
        "tencent_voice": ChannelType(tencent_voice.Options, tencent_voice.TencentVoiceChannel),
    }
)


def options_union() -> Any:
    """The annotation for one channel's options in the config: a union tagged by ``type``,
    so a validation error names the allowed types and only that type's fields."""
    variants = tuple(channel_type.options for channel_type in CHANNEL_TYPES.values())
    return Annotated[Union[variants], Field(discriminator="type")]  # noqa: UP007


def build_channel(name: str, options: ChannelOptions, http: aiohttp.ClientSession) -> Channel:
    """The channel for validated ``options``; ``name`` is its key in the config."""
    channel_type = CHANNEL_TYPES.get(options.type)
    if channel_type is None or not isinstance(options, channel_type.options):
        raise TypeError(f"channel {name}: no channel type for {type(options).__name__}")
    return channel_type.factory(name, options, http)
