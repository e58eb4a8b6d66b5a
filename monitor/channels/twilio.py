"""``twilio``: SMS through Twilio's Messages API, one request per recipient.

The notifier calls ``send`` once per recipient (its dedup key names the recipient),
so ``message.recipients`` usually holds one number. When it holds several and a
later one fails, the error names the numbers already sent to: Twilio's Messages
API has no idempotency key, and retrying the whole message would text them again.
Twilio's reach into mainland China is uncertain; use ``aliyun`` or ``tencent`` for
+86 numbers.
"""

from __future__ import annotations

import base64
import time
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, HttpUrl, SecretStr, model_validator
from yarl import URL

from monitor.channels.base import (
    E164,
    ChannelOptions,
    Clock,
    PhoneNumber,
    http_status_error,
    json_object,
    recipients,
    redact,
    shorten,
    sms_text,
    transport_error,
)
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

# Twilio error codes that no retry can fix (twilio.com/docs/api/errors).
PERMANENT_CODES = MappingProxyType(
    {
        21211: "invalid 'To' number",
        21610: "the recipient unsubscribed (replied STOP)",
        21408: "sending to this region is not enabled on the account",
        21614: "'To' is not a mobile number",
    }
)


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "phone"
    sends_sms: ClassVar[bool] = True
    type: Literal["twilio"] = Field("twilio", description="Channel type")
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="Account SID (AC…)")
    auth_token: SecretStr = Field(description="Auth token of the account")
    from_number: str | None = Field(None, pattern=E164, description="Sender number, E.164")
    messaging_service_sid: str | None = Field(
        None, pattern=r"^MG[0-9a-fA-F]{32}$", description="Messaging service (MG…) instead of from"
    )
    to: list[PhoneNumber] = Field([], description="E.164 numbers used when the message names none")
    base_url: HttpUrl = Field(HttpUrl("https://api.twilio.com"), description="API base URL")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")

    @model_validator(mode="after")
    def _one_sender(self) -> Options:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from_number and messaging_service_sid")
        return self


class TwilioChannel:
    """Posts one Message resource per recipient; the receipt lists their SIDs."""

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        base = URL(str(options.base_url))
        self.url = base / "2010-04-01" / "Accounts" / options.account_sid / "Messages.json"

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        sids: list[str] = []
        sent: list[str] = []
        for number in recipients(message, self.options.to):
            try:
                sids.append(await self._send_one(number, sms_text(message)))
            except DeliveryError as exc:
                if not sent:
                    raise
                # Say who already has it, so nobody is surprised by a second text on retry.
                raise DeliveryError(
                    f"{exc}; already sent to {', '.join(sent)}",
                    retryable=exc.retryable,
                    retry_after=exc.retry_after,
                ) from None
            sent.append(number)
        return DeliveryReceipt(",".join(sids), f"sent to {', '.join(sent)}")

    async def _send_one(self, number: str, body: str) -> str:
        opts = self.options
        form = {"To": number, "Body": body}
        if opts.messaging_service_sid is not None:
            form["MessagingServiceSid"] = opts.messaging_service_sid
        elif opts.from_number is not None:
            form["From"] = opts.from_number
        pair = f"{opts.account_sid}:{opts.auth_token.get_secret_value()}".encode()
        headers = {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        try:
            async with self.http.post(
                self.url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=opts.timeout),
            ) as resp:
                status, resp_headers = resp.status, resp.headers
                document = await json_object(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, "Twilio") from None
        if 200 <= status < 300:  # accepted: Twilio has it queued, whatever the body says
            return str(document.get("sid") or "unknown")
        raise self._error(number, status, resp_headers, document)

    def _error(
        self, number: str, status: int, headers: Any, document: dict[str, Any]
    ) -> DeliveryError:
        code = document.get("code")
        text = redact(shorten(str(document.get("message") or "")), self.options.auth_token)
        detail = f"error {code}: {text}" if code else text
        if status in (401, 403):
            return DeliveryError(
                f"Twilio refused the credentials (HTTP {status}): {detail}; check account_sid "
                "and auth_token",
                retryable=False,
            )
        if isinstance(code, int) and (meaning := PERMANENT_CODES.get(code)):
            text = f"Twilio cannot text {number}: {meaning} ({detail})"
            return DeliveryError(text, retryable=False)
        return http_status_error(status, headers, detail, f"Twilio, sending to {number}", self.now)
