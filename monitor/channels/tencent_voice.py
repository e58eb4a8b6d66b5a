"""``tencent_voice``: a Tencent Cloud VMS text-to-speech call, ``SendTtsVoice``.

``POST https://vms.tencentcloudapi.com/``, Version 2020-09-02, signed with
TC3-HMAC-SHA256 like SMS (service ``vms``;
:func:`monitor.channels.tencent.authorization`). Body: ``TemplateId`` (an approved
voice template with one parameter, which receives the spoken text),
``CalledNumber`` (E.164, mainland mobiles only), ``VoiceSdkAppid``,
``TemplateParamSet``, ``PlayTimes`` (1-3) and ``SessionContext`` (the dedup key,
echoed in Tencent's call reports). A spoken text may hold 350 characters. The
answer is ``{"Response":{"SendStatus":{"CallId",…},"RequestId"}}`` or
``{"Response":{"Error":{"Code","Message"}}}``.

Tencent limits calls per callee: by default 1 per 30 s, 2 per 10 min, 3 a day and
**1 between 22:00 and 08:00** (raisable on request): this channel's default
``budget``.
"""

from __future__ import annotations

import json
import time
from types import MappingProxyType
from typing import ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr
from yarl import URL

from monitor.channels.base import Clock, http_status_error, json_object, shorten, transport_error
from monitor.channels.tencent import CONTENT_TYPE, authorization
from monitor.channels.voice import (
    CallBudgetSpec,
    VoiceOptions,
    budget_spec,
    callee,
    spoken_text,
)
from monitor.engine.voice_budget import TENCENT_DEFAULT, CallBudget
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

SERVICE = "vms"
VERSION = "2020-09-02"
WHAT = "Tencent Cloud voice"
TEXT_LIMIT = 350  # characters of a voice message
# Named codes of SendTtsVoice (its API page and the VMS error list); prefixes below
# decide the rest.
NAMED_CODES = MappingProxyType(
    {
        "FailedOperation.TemplateIncorrectOrUnapproved": (
            "the template is not approved or the text does not match it (1014)", False),
        "FailedOperation.FailResolvePacket": (
            "the request does not follow the API (1004)", False),
        "FailedOperation.InsufficientBalanceInVoicePackage": (
            "the voice package is used up", False),
        "FailedOperation.ContainSensitiveWord": ("the text holds a sensitive word", False),
        "FailedOperation.AccessUpstreamTimeout": ("the upstream timed out", True),
    }
)  # fmt: skip


class Options(VoiceOptions):
    type: Literal["tencent_voice"] = Field("tencent_voice", description="Channel type")
    secret_id: str = Field(min_length=1, description="SecretId of a CAM user allowed to call")
    secret_key: SecretStr = Field(description="SecretKey")
    voice_sdk_app_id: str = Field(pattern=r"^\d+$", description="VMS application id (1400…)")
    template_id: str = Field(pattern=r"^\d+$", description="Approved voice template, one param")
    region: str = Field("ap-guangzhou", description="X-TC-Region of the request")
    endpoint: HttpUrl = Field(HttpUrl("https://vms.tencentcloudapi.com/"), description="API URL")
    budget: CallBudgetSpec = Field(
        default_factory=lambda: budget_spec(TENCENT_DEFAULT),
        description="Calls allowed per callee (default: Tencent's 1/30s, 2/10min, 3/day, "
        "1 between 22:00 and 08:00 Beijing time)",
    )

    def call_budget(self) -> CallBudget:
        return self.budget.budget()


class TencentVoiceChannel:
    """One signed POST per call; the receipt is Tencent's CallId."""

    # a schedule's person is called on their phone
    recipient_kind: ClassVar[str | None] = "phone"

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        self.url = URL(str(options.endpoint))
        host = self.url.host or ""
        self.host = host if self.url.is_default_port() else f"{host}:{self.url.port}"

    def body(self, message: RenderedMessage) -> bytes:
        opts = self.options
        return json.dumps(
            {
                "TemplateId": opts.template_id,
                "CalledNumber": callee(message, opts.to),
                "VoiceSdkAppid": opts.voice_sdk_app_id,
                "TemplateParamSet": [spoken_text(message)[:TEXT_LIMIT]],
                "PlayTimes": opts.play_times,
                "SessionContext": message.dedup_key,
            },
            ensure_ascii=False,
        ).encode()

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        body = self.body(message)
        timestamp = int(self.now())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": "SendTtsVoice",
            "X-TC-Version": VERSION,
            "X-TC-Region": opts.region,
            "X-TC-Timestamp": str(timestamp),
            "Authorization": authorization(
                opts.secret_id, opts.secret_key.get_secret_value(), self.host, body, timestamp,
                SERVICE,
            ),
        }  # fmt: skip
        try:
            async with self.http.post(
                self.url, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=opts.timeout),
            ) as resp:  # fmt: skip
                status, resp_headers = resp.status, resp.headers
                document = await json_object(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, WHAT) from None
        response = document.get("Response")
        if not isinstance(response, dict):
            raise http_status_error(
                status, resp_headers, "no Response in the answer", WHAT, self.now
            )
        if isinstance(error := response.get("Error"), dict):
            raise _error(str(error.get("Code", "")), str(error.get("Message", "")), status)
        send_status = response.get("SendStatus")
        call_id = send_status.get("CallId") if isinstance(send_status, dict) else None
        if not call_id:
            raise DeliveryError(f"{WHAT}: no CallId in the answer", retryable=True)
        return DeliveryReceipt(str(call_id), f"RequestId {response.get('RequestId', '?')}")


def _error(code: str, text: str, status: int) -> DeliveryError:
    detail = f"{code}: {shorten(text)}"
    if code in NAMED_CODES:
        name, retryable = NAMED_CODES[code]
        return DeliveryError(f"{WHAT} refused the call: {name} ({detail})", retryable=retryable)
    if code.startswith("AuthFailure"):
        return DeliveryError(
            f"{WHAT} refused the credentials ({detail}); check secret_id, secret_key and the "
            "system clock",
            retryable=False,
        )
    if code.startswith(("InternalError", "RequestLimitExceeded")) or status >= 500:
        return DeliveryError(f"{WHAT} asks to try later ({detail})", retryable=True)
    # LimitExceeded.*: the callee's frequency limit; our budget should have kept us
    # under it, and a failed call counts too: a person must look (the budget setting).
    return DeliveryError(f"{WHAT} refused the call ({detail})", retryable=False)
