"""``aliyun``: Alibaba Cloud SMS ``SendSms`` (RPC style, signature version 1.0, HMAC-SHA1).

SMS in mainland China only carries approved templates: the message's SMS text is
passed as one template variable (``template_param_name``, default ``content``),
so the template must be e.g. ``${content}`` under an approved sign name. Alibaba
limits the length of a variable by its declared kind; declare it long enough for
the notifier's SMS budget.

``SendSms`` is not idempotent. Each attempt signs with a fresh ``SignatureNonce``
(Alibaba rejects a nonce reused within 15 minutes) and passes the dedup key as
``OutId``, so Alibaba's delivery records can be matched to our outbox; avoiding a
second send is the notifier's job. All recipients go in one request (up to 1000).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, HttpUrl, SecretStr
from yarl import URL

from monitor.channels.base import (
    ChannelOptions,
    Clock,
    http_status_error,
    json_object,
    recipients,
    shorten,
    sms_text,
    transport_error,
)
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

OUT_ID_LENGTH = 64
# Codes no retry can fix: the request, the account or the template needs an operator.
PERMANENT_CODES = MappingProxyType(
    {
        "isv.MOBILE_NUMBER_ILLEGAL": "invalid phone number",
        "isv.SMS_SIGNATURE_ILLEGAL": "sign_name is not approved",
        "isv.TEMPLATE_MISSING_PARAMETERS": "the template expects other variables",
        "isv.AMOUNT_NOT_ENOUGH": "the account balance is too low",
        "InvalidAccessKeyId.NotFound": "unknown access_key_id",
        "SignatureDoesNotMatch": "signature rejected: check access_key_secret",
    }
)
# Throttling and per-number flow control pass with time.
RETRYABLE_PREFIXES = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling", "ServiceUnavailable",
                      "InternalError", "SignatureNonceUsed")  # fmt: skip


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "phone"
    sends_sms: ClassVar[bool] = True
    type: Literal["aliyun"] = Field("aliyun", description="Channel type")
    access_key_id: str = Field(min_length=1, description="AccessKey ID of a RAM user with SMS")
    access_key_secret: SecretStr = Field(description="AccessKey secret")
    sign_name: str = Field(min_length=1, description="Approved SMS signature (签名)")
    template_code: str = Field(min_length=1, description="Approved template, e.g. SMS_123456789")
    template_param_name: str = Field(
        "content", min_length=1, description="Template variable that receives the SMS text"
    )
    endpoint: HttpUrl = Field(HttpUrl("https://dysmsapi.aliyuncs.com/"), description="API URL")
    region: str = Field("cn-hangzhou", description="RegionId sent with the request")
    to: list[str] = Field([], description="Phone numbers used when the message names none")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")


def percent_encode(text: str) -> str:
    """Alibaba's encoding: RFC 3986 unreserved characters kept, UTF-8, space as %20."""
    return quote(text, safe="~")


def sign(params: Mapping[str, str], secret: str, method: str = "GET") -> str:
    """Signature version 1.0 over the sorted, encoded query."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items())
    )
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def out_id(dedup_key: str) -> str:
    """The dedup key, or a prefix plus a hash when it is too long to pass whole."""
    if len(dedup_key) <= OUT_ID_LENGTH:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:16]
    return f"{dedup_key[: OUT_ID_LENGTH - 17]}-{digest}"


class AliyunChannel:
    """One signed GET per message, all recipients in ``PhoneNumbers``; receipt: BizId."""

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
        return {
            "AccessKeyId": opts.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": out_id(message.dedup_key),
            "PhoneNumbers": ",".join(recipients(message, opts.to)),
            "RegionId": opts.region,
            "SignName": opts.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": nonce,
            "SignatureVersion": "1.0",
            "TemplateCode": opts.template_code,
            "TemplateParam": json.dumps(
                {opts.template_param_name: sms_text(message)}, ensure_ascii=False
            ),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now())),
            "Version": "2017-05-25",
        }

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        params = self.request_params(message, str(uuid.uuid4()))
        status, headers, document = await signed_get(
            self.http,
            str(opts.endpoint),
            params,
            opts.access_key_secret.get_secret_value(),
            opts.timeout,
            "Alibaba Cloud SMS",
        )
        code = str(document.get("Code") or "")
        if code == "OK":
            return DeliveryReceipt(
                document.get("BizId"), f"RequestId {document.get('RequestId', '?')}"
            )
        raise self._error(status, headers, code, shorten(str(document.get("Message") or "")))

    def _error(self, status: int, headers: Any, code: str, text: str) -> DeliveryError:
        what = "Alibaba Cloud SMS"
        if code in PERMANENT_CODES:
            return DeliveryError(
                f"{what} refused the message: {PERMANENT_CODES[code]} ({code}: {text})",
                retryable=False,
            )
        if code.startswith(RETRYABLE_PREFIXES):
            return DeliveryError(f"{what} asks to try later ({code}: {text})", retryable=True)
        # An unknown code: permanent unless the HTTP status says otherwise (429, 5xx).
        detail = f"{code}: {text}" if code else "no Code in the answer"
        return http_status_error(status, headers, detail, what, self.now)


async def signed_get(
    http: aiohttp.ClientSession,
    endpoint: str,
    params: dict[str, str],
    secret: str,
    seconds: float,
    what: str,
) -> tuple[int, Mapping[str, str], dict[str, Any]]:
    """One Alibaba Cloud RPC call (SMS, voice): ``params`` signed and sent as a GET;
    the answer's status, headers and JSON object. Transport failures are retryable."""
    params = {**params, "Signature": sign(params, secret)}
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
    # encoded=True: yarl must not re-encode what the signature covers.
    url = URL(f"{endpoint.rstrip('/')}/?{query}", encoded=True)
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=seconds)) as resp:
            return resp.status, resp.headers, await json_object(resp)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc, what) from None
