"""``webhook``: POST the message's JSON payload to a URL (a ticketing system, a chat bridge).

The body is ``message.payload`` (the rendered webhook template) as UTF-8 JSON; a
message without one gets a small default document. ``Idempotency-Key`` carries the
dedup key so a receiver can recognise a retry; a ``409 Conflict`` answer is read as
"already received" and counts as delivered. The URL is a secret, as in
Alertmanager: chat webhooks (DingTalk, WeCom, Feishu) carry their token in it. It
is never shown in errors, only its host.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import AfterValidator, Field, SecretStr, model_validator
from yarl import URL

from monitor.channels.base import (
    ChannelOptions,
    Clock,
    http_status_error,
    redact,
    shorten,
    tls_context,
    transport_error,
)
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

MAX_BODY = 65536
RESERVED_HEADERS = frozenset({"content-type", "idempotency-key", "content-length", "host"})


def _http_url(value: SecretStr) -> SecretStr:
    url = URL(value.get_secret_value())
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("url must be an absolute http:// or https:// URL")
    return value


class Options(ChannelOptions):
    type: Literal["webhook"] = Field("webhook", description="Channel type")
    url: Annotated[SecretStr, AfterValidator(_http_url)] = Field(
        description="http(s) URL to send to (a secret: tokens often live in it)"
    )
    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method")
    headers: dict[str, str] = Field({}, description="Extra request headers (not secrets)")
    bearer_token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer'")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(None, description="PEM bundle of CAs to trust instead of system's")

    @model_validator(mode="after")
    def _headers_allowed(self) -> Options:
        names = {name.lower() for name in self.headers}
        if reserved := sorted(names & RESERVED_HEADERS):
            raise ValueError(f"headers: {', '.join(reserved)} is set by the channel")
        if "authorization" in names and self.bearer_token is not None:
            raise ValueError("set either bearer_token or an Authorization header, not both")
        return self


class WebhookChannel:
    """One request per message; the receipt is the receiver's request or object id."""

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession, *, now: Clock = time.time
    ) -> None:
        self.name = name
        self.options = options
        self.http = http
        self.now = now
        self.url = URL(options.url.get_secret_value())
        self.what = f"webhook {self.url.host}"
        # What a receiver could echo of the URL's tokens: query values, long path segments.
        self._url_secrets = sorted(
            {str(self.url), self.url.raw_query_string, *self.url.query.values(),
             *(part for part in self.url.parts if len(part) >= 16)} - {""},
            key=len, reverse=True,
        )  # fmt: skip

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext | bool:
        """``True`` (aiohttp's default verification) unless the options change it."""
        opts = self.options
        if opts.tls_verify and opts.ca_file is None:
            return True
        return tls_context(opts.tls_verify, opts.ca_file)

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        headers = {"User-Agent": "csp-monitor", **opts.headers}
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Idempotency-Key"] = message.dedup_key
        if opts.bearer_token is not None:
            headers["Authorization"] = f"Bearer {opts.bearer_token.get_secret_value()}"
        body = json.dumps(message.payload or default_payload(message), ensure_ascii=False)
        try:
            async with self.http.request(
                opts.method, self.url, data=body.encode(), headers=headers, ssl=self._tls,
                allow_redirects=False,  # a redirected POST may turn into a GET: say so instead
                timeout=aiohttp.ClientTimeout(total=opts.timeout),
            ) as resp:  # fmt: skip
                text = await _read_text(resp.content)
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, self.what) from None
        if 200 <= status < 300:
            return DeliveryReceipt(_receipt_id(resp_headers, text), f"HTTP {status}")
        if status == 409:  # the receiver has this Idempotency-Key already: delivered before
            return DeliveryReceipt(_receipt_id(resp_headers, text), "HTTP 409: already received")
        if 300 <= status < 400:
            target = URL(resp_headers.get("Location", "")).host or "elsewhere"
            raise DeliveryError(
                f"{self.what}: HTTP {status} redirect to {target}; set url to the final address",
                retryable=False,
            )
        detail = shorten(redact(text, opts.bearer_token, *self._url_secrets))
        if status in (401, 403):
            detail += "; check bearer_token or the token in the url"
        raise http_status_error(status, resp_headers, detail, self.what, self.now)


def default_payload(message: RenderedMessage) -> dict[str, Any]:
    """The body when no webhook template rendered one: what a receiver needs to act."""
    return {
        "event": message.event,
        "incident_id": message.incident_id,
        "subject": message.subject,
        "text": message.text,
        "dedup_key": message.dedup_key,
    }


async def _read_text(content: aiohttp.StreamReader) -> str:
    """Enough of the body for an id or an error message; a huge page is not read whole."""
    chunks: list[bytes] = []
    left = MAX_BODY
    while left > 0 and (chunk := await content.read(left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _receipt_id(headers: Any, text: str) -> str | None:
    if request_id := headers.get("X-Request-Id"):
        return str(request_id)
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("id"), str | int):
        return str(document["id"])
    return None
