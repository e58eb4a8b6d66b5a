"""``tencent``: Tencent Cloud SMS ``SendSms`` (API 2021-01-11), signed with TC3-HMAC-SHA256.

The template must take exactly one parameter: ``TemplateParamSet`` is
``[message.sms]``. Tencent limits a parameter's length by its declared kind;
declare it long enough for the notifier's SMS budget. ``SessionContext`` carries
the dedup key, which Tencent echoes in receipts and delivery reports. All
recipients go in one request (up to 200), each with its own status: a partial
failure names the numbers that were sent to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr
from yarl import URL

from monitor.channels.base import (
    ChannelOptions,
    Clock,
    PhoneNumber,
    http_status_error,
    json_object,
    recipients,
    shorten,
    sms_text,
    transport_error,
)
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
WHAT = "Tencent Cloud SMS"
# Per-number limits that a retry later can pass, with the wait Tencent's window implies.
RETRY_AFTER = MappingProxyType(
    {
        "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
        "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    }
)
# Daily limits pass only tomorrow: for an alert that is as good as never.
DAILY_LIMITS = (
    "LimitExceeded.PhoneNumberDailyLimit",
    "LimitExceeded.PhoneNumberSameContentDailyLimit",
    "LimitExceeded.AppDailyLimit",
)
RETRYABLE_PREFIXES = ("LimitExceeded", "RequestLimitExceeded", "InternalError")


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "phone"
    sends_sms: ClassVar[bool] = True
    type: Literal["tencent"] = Field("tencent", description="Channel type")
    secret_id: str = Field(min_length=1, description="SecretId of a CAM user allowed to send SMS")
    secret_key: SecretStr = Field(description="SecretKey")
    sms_sdk_app_id: str = Field(pattern=r"^\d+$", description="SMS application id, e.g. 1400006666")
    sign_name: str = Field(min_length=1, description="Approved SMS signature (签名)")
    template_id: str = Field(pattern=r"^\d+$", description="Approved template with one parameter")
    region: str = Field("ap-guangzhou", description="X-TC-Region of the request")
    endpoint: HttpUrl = Field(HttpUrl("https://sms.tencentcloudapi.com/"), description="API URL")
    to: list[PhoneNumber] = Field([], description="E.164 numbers used when the message names none")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")


def authorization(
    secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int, service: str = SERVICE
) -> str:
    """The TC3-HMAC-SHA256 ``Authorization`` header over content-type and host, for
    ``service`` (``sms``; ``vms`` for voice calls)."""
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    canonical_request = "\n".join(
        ["POST", "/", "", f"content-type:{CONTENT_TYPE}", f"host:{host}", "",
         "content-type;host", hashlib.sha256(body).hexdigest()]
    )  # fmt: skip
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope,
         hashlib.sha256(canonical_request.encode()).hexdigest()]
    )  # fmt: skip
    key = _hmac(f"TC3{secret_key}".encode(), date)
    key = _hmac(_hmac(key, service), "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class TencentChannel:
    """One signed POST per message; the receipt lists the SerialNo of every number."""

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        self.url = URL(str(options.endpoint))
        # The signed host must be the Host header sent: with the port when it is not default.
        host = self.url.host or ""
        self.host = host if self.url.is_default_port() else f"{host}:{self.url.port}"

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        body = json.dumps(
            {
                "PhoneNumberSet": list(recipients(message, opts.to)),
                "SmsSdkAppId": opts.sms_sdk_app_id,
                "SignName": opts.sign_name,
                "TemplateId": opts.template_id,
                "TemplateParamSet": [sms_text(message)],
                "SessionContext": message.dedup_key,
            },
            ensure_ascii=False,
        ).encode()
        timestamp = int(self.now())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": VERSION,
            "X-TC-Region": opts.region,
            "X-TC-Timestamp": str(timestamp),
            "Authorization": authorization(
                opts.secret_id, opts.secret_key.get_secret_value(), self.host, body, timestamp
            ),
        }
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
            raise _request_error(str(error.get("Code", "")), str(error.get("Message", "")), status)
        return _receipt(response)


def _request_error(code: str, text: str, status: int) -> DeliveryError:
    detail = f"{code}: {shorten(text)}"
    if code.startswith("AuthFailure"):
        return DeliveryError(
            f"{WHAT} refused the credentials ({detail}); check secret_id, secret_key and the "
            "system clock",
            retryable=False,
        )
    if code.startswith(RETRYABLE_PREFIXES) or status >= 500:
        return DeliveryError(f"{WHAT} asks to try later ({detail})", retryable=True)
    return DeliveryError(f"{WHAT} refused the request ({detail})", retryable=False)


def _receipt(response: dict[str, Any]) -> DeliveryReceipt:
    """The SerialNos when every number was accepted, else an error naming each failure."""
    statuses = [s for s in response.get("SendStatusSet") or [] if isinstance(s, dict)]
    sent = [s for s in statuses if s.get("Code") == "Ok"]
    failed = [s for s in statuses if s.get("Code") != "Ok"]
    if not failed:
        serials = ",".join(str(s.get("SerialNo", "")) for s in sent)
        return DeliveryReceipt(serials or None, f"RequestId {response.get('RequestId', '?')}")
    problems = "; ".join(f"{s.get('PhoneNumber')}: {_describe(s)}" for s in failed)
    retryable = any(_retryable(str(s.get("Code", ""))) for s in failed)
    waits = [RETRY_AFTER[c] for s in failed if (c := str(s.get("Code", ""))) in RETRY_AFTER]
    text = f"{WHAT} did not send to {problems}"
    if sent:
        text += f"; already sent to {', '.join(str(s.get('PhoneNumber')) for s in sent)}"
    raise DeliveryError(text, retryable=retryable, retry_after=max(waits) if waits else None)


def _retryable(code: str) -> bool:
    return not code.startswith(DAILY_LIMITS) and code.startswith(RETRYABLE_PREFIXES)


def _describe(status: dict[str, Any]) -> str:
    code = str(status.get("Code", ""))
    text = f"{code} {shorten(str(status.get('Message', '')))}"
    if code.startswith(DAILY_LIMITS):
        text += " (a daily limit: not retried for this alert; it clears tomorrow)"
    return text
