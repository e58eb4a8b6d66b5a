"""``aliyun_voice``: an Alibaba Cloud VMS text-to-speech call, ``SingleCallByTts``.

RPC style on ``dyvmsapi.aliyuncs.com``, Version 2017-05-25, signed like SMS
(signature version 1.0, HMAC-SHA1; :func:`monitor.channels.aliyun.sign`). One call
per request: ``CalledNumber`` is one number (mainland, without +86), ``TtsCode``
an approved TTS template whose one variable (``tts_param_name``) receives the
spoken text, ``CalledShowNumber`` empty for the shared public number pool,
``PlayTimes``, and ``OutId`` the dedup key (Alibaba's call records can be matched
to our outbox). The answer is ``{"Code":"OK","CallId":…}`` or an error ``Code``.

Alibaba limits calls per callee (1 a minute, 5 an hour, 20 in 24 h, failed calls
included; fixed in public mode): that is this channel's default ``budget``. Its
console cannot place calls 12:00-14:00 or 21:00-09:00 and a copy of the API page
says the API cannot either (unconfirmed): test it before relying on Aliyun for
night calls, and list a Tencent channel after it on the step.
"""

from __future__ import annotations

import json
import time
import uuid
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr

from monitor.channels.aliyun import out_id, signed_get
from monitor.channels.base import Clock, http_status_error, shorten
from monitor.channels.voice import (
    CallBudgetSpec,
    VoiceOptions,
    budget_spec,
    callee,
    spoken_text,
)
from monitor.engine.voice_budget import ALIYUN_DEFAULT, CallBudget
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

WHAT = "Alibaba Cloud voice"
# Codes no retry can fix: the account, the number or the template needs an operator.
PERMANENT_CODES = MappingProxyType(
    {
        "isv.MOBILE_NUMBER_ILLEGAL": "invalid phone number",
        "isv.TTS_TEMPLATE_ILLEGAL": "the TTS template is not approved or does not exist",
        "isv.TEMPLATE_MISSING_PARAMETERS": "the TTS template expects other variables",
        "isv.AMOUNT_NOT_ENOUGH": "the account balance is too low",
        "InvalidAccessKeyId.NotFound": "unknown access_key_id",
        "SignatureDoesNotMatch": "signature rejected: check access_key_secret",
        # Our budget should have kept us under Alibaba's per-callee limit; retrying now
        # would only count against it again (failed calls count).
        "isv.BUSINESS_LIMIT_CONTROL": "the callee's call limit is reached (Alibaba's flow "
        "control): check the channel's budget",
    }
)
RETRYABLE_PREFIXES = ("Throttling", "ServiceUnavailable", "InternalError", "SignatureNonceUsed")


class Options(VoiceOptions):
    type: Literal["aliyun_voice"] = Field("aliyun_voice", description="Channel type")
    access_key_id: str = Field(min_length=1, description="AccessKey ID of a RAM user with VMS")
    access_key_secret: SecretStr = Field(description="AccessKey secret")
    tts_code: str = Field(min_length=1, description="Approved TTS template, e.g. TTS_123456789")
    tts_param_name: str = Field(
        "content", min_length=1, description="Template variable that receives the spoken text"
    )
    called_show_number: str = Field(
        "", description="Caller id you own; empty: the shared public number pool"
    )
    endpoint: HttpUrl = Field(HttpUrl("https://dyvmsapi.aliyuncs.com/"), description="API URL")
    region: str = Field("cn-hangzhou", description="RegionId sent with the request")
    budget: CallBudgetSpec = Field(
        default_factory=lambda: budget_spec(ALIYUN_DEFAULT),
        description="Calls allowed per callee (default: Alibaba's 1/min, 5/h, 20/24h)",
    )

    def call_budget(self) -> CallBudget:
        return self.budget.budget()


def called_number(number: str) -> str:
    """Alibaba takes mainland numbers without the country code: +8613800000000 →
    13800000000; others keep theirs, without the +."""
    return number[3:] if number.startswith("+86") else number.lstrip("+")


class AliyunVoiceChannel:
    """One signed GET per call; the receipt is Alibaba's CallId."""

    # a schedule's person is called on their phone
    recipient_kind: ClassVar[str | None] = "phone"

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now

    def request_params(self, message: RenderedMessage, nonce: str) -> dict[str, str]:
        """Every query parameter but the signature."""
        opts = self.options
        params = {
            "AccessKeyId": opts.access_key_id,
            "Action": "SingleCallByTts",
            "CalledNumber": called_number(callee(message, opts.to)),
            "Format": "JSON",
            "OutId": out_id(message.dedup_key),
            "PlayTimes": str(opts.play_times),
            "RegionId": opts.region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce,
            "SignatureVersion": "1.0",
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now())),
            "TtsCode": opts.tts_code,
            "TtsParam": json.dumps({opts.tts_param_name: spoken_text(message)}, ensure_ascii=False),
            "Version": "2017-05-25",
        }
        if opts.called_show_number:
            params["CalledShowNumber"] = opts.called_show_number
        return params

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        params = self.request_params(message, str(uuid.uuid4()))
        status, headers, document = await signed_get(
            self.http,
            str(opts.endpoint),
            params,
            opts.access_key_secret.get_secret_value(),
            opts.timeout,
            WHAT,
        )
        code = str(document.get("Code") or "")
        if code == "OK":
            return DeliveryReceipt(
                document.get("CallId"), f"RequestId {document.get('RequestId', '?')}"
            )
        raise self._error(status, headers, code, shorten(str(document.get("Message") or "")))

    def _error(self, status: int, headers: Any, code: str, text: str) -> DeliveryError:
        if code in PERMANENT_CODES:
            return DeliveryError(
                f"{WHAT} refused the call: {PERMANENT_CODES[code]} ({code}: {text})",
                retryable=False,
            )
        if code.startswith(RETRYABLE_PREFIXES):
            return DeliveryError(f"{WHAT} asks to try later ({code}: {text})", retryable=True)
        detail = f"{code}: {text}" if code else "no Code in the answer"
        return http_status_error(status, headers, detail, WHAT, self.now)
