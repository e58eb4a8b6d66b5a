"""The webhook channel against a real aiohttp.web receiver on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from monitor.channels.webhook import Options, WebhookChannel
from monitor.notify.message import DeliveryError, RenderedMessage

TOKEN = "whk-bearer-never-shown"
URL_TOKEN = "access_token=dingtalk-url-secret"
MESSAGE = RenderedMessage(
    dedup_key="INC-20261123-0007:opened:0:ticket-hook",
    channel="ticket-hook",
    event="opened",
    recipients=(),
    subject="[DOWN] Contoso / Exchange Online",
    text="text",
    payload={"incident": "INC-20261123-0007", "summary": "Exchange Online 不可用", "level": 2},
    incident_id="INC-20261123-0007",
)


@dataclass
class Receiver:
    port: int
    tls_port: int
    ca_file: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?{URL_TOKEN}"


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers),
             "body": await request.read()}
        )  # fmt: skip
        name = request.match_info["name"]
        if name == "request-id":
            return web.Response(status=202, headers={"X-Request-Id": "req-7f3a"})
        if name == "json-id":
            return web.json_response({"id": 4711, "status": "created"}, status=201)
        if name == "empty":
            return web.Response(status=204)
        if name == "redirect":
            raise web.HTTPMovedPermanently("/hook/request-id")
        if name == "echo":  # a careless receiver quoting our credentials back
            text = f"denied for {request.headers.get('Authorization')} at {request.query_string}"
            return web.Response(status=401, text=text)
        if name == "slow":
            await asyncio.sleep(5)
            return web.Response(status=200)
        if name == "big":
            return web.Response(status=500, text="x" * 500_000)
        status = int(name)
        headers = {"Retry-After": "42"} if status in (429, 503) else {}
        return web.Response(status=status, text=f"status {status}", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/hook/{name}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await plain.start()
    await tls.start()
    (_, port), (_, tls_port) = runner.addresses[:2]
    try:
        yield Receiver(port, tls_port, str(ca_file), seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def channel(http: aiohttp.ClientSession, url: str, **options: Any) -> WebhookChannel:
    return WebhookChannel("ticket-hook", Options(url=url, **options), http)


async def test_posts_payload_with_idempotency_key(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receipt = await channel(
        http, receiver.url("/hook/request-id"), bearer_token=TOKEN, headers={"X-Tenant": "noc"}
    ).send(MESSAGE)

    assert receipt.provider_id == "req-7f3a"
    [request] = receiver.requests
    assert request["method"] == "POST"
    assert json.loads(request["body"].decode("utf-8")) == MESSAGE.payload
    assert "不可用".encode() in request["body"]  # UTF-8, not \\u escapes
    headers = request["headers"]
    assert headers["Idempotency-Key"] == MESSAGE.dedup_key
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Tenant"] == "noc"


async def test_receipt_from_json_id_and_method(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receipt = await channel(http, receiver.url("/hook/json-id"), method="PUT").send(MESSAGE)
    assert receipt.provider_id == "4711"
    assert receiver.requests[0]["method"] == "PUT"
    receipt = await channel(http, receiver.url("/hook/empty")).send(MESSAGE)
    assert receipt.provider_id is None and receipt.detail == "HTTP 204"


async def test_message_without_payload_gets_default_document(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    message = RenderedMessage(
        dedup_key="k", channel="c", event="resolved", recipients=(), subject="恢复", text="ok"
    )
    await channel(http, receiver.url("/hook/empty")).send(message)
    body = json.loads(receiver.requests[0]["body"])
    assert body == {"event": "resolved", "incident_id": None, "subject": "恢复", "text": "ok",
                    "dedup_key": "k"}  # fmt: skip


async def test_409_means_already_received(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    receipt = await channel(http, receiver.url("/hook/409")).send(MESSAGE)
    assert "already received" in receipt.detail


@pytest.mark.parametrize(
    ("status", "retryable", "retry_after"),
    [(400, False, None), (404, False, None), (422, False, None), (408, True, None),
     (429, True, 42.0), (500, True, None), (502, True, None), (503, True, 42.0)],
)  # fmt: skip
async def test_status_mapping(
    receiver: Receiver, http: aiohttp.ClientSession,
    status: int, retryable: bool, retry_after: float | None,
) -> None:  # fmt: skip
    with pytest.raises(DeliveryError) as caught:
        await channel(http, receiver.url(f"/hook/{status}")).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after
    assert f"HTTP {status}" in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


async def test_secrets_never_in_errors(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(http, receiver.url("/hook/echo"), bearer_token=TOKEN).send(MESSAGE)
    text = str(caught.value)
    assert not caught.value.retryable and "HTTP 401" in text and "check bearer_token" in text
    assert TOKEN not in text and "dingtalk-url-secret" not in text
    assert "dingtalk-url-secret" not in repr(Options(url=receiver.url("/hook/x")))


async def test_redirect_is_not_followed(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(http, receiver.url("/hook/redirect")).send(MESSAGE)
    assert not caught.value.retryable and "redirect" in str(caught.value)
    assert len(receiver.requests) == 1


async def test_big_error_page_is_cut(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(http, receiver.url("/hook/big")).send(MESSAGE)
    assert caught.value.retryable and len(str(caught.value)) < 300


async def test_timeout_and_refused_are_retryable(
    receiver: Receiver, http: aiohttp.ClientSession, free_port: int
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(http, receiver.url("/hook/slow"), timeout=0.2).send(MESSAGE)
    assert caught.value.retryable and "timed out" in str(caught.value)
    with pytest.raises(DeliveryError) as caught:
        await channel(http, f"http://127.0.0.1:{free_port}/hook").send(MESSAGE)
    assert caught.value.retryable and "connection refused" in str(caught.value)


async def test_tls_with_private_ca(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    url = f"https://127.0.0.1:{receiver.tls_port}/hook/request-id"
    receipt = await channel(http, url, ca_file=receiver.ca_file).send(MESSAGE)
    assert receipt.provider_id == "req-7f3a"
    await channel(http, url, tls_verify=False).send(MESSAGE)

    with pytest.raises(DeliveryError) as caught:
        await channel(http, url).send(MESSAGE)  # the system CAs do not know ours
    assert not caught.value.retryable and "certificate verification failed" in str(caught.value)


def test_options() -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        Options(url="ftp://example.cn/hook")
    with pytest.raises(ValidationError, match="idempotency-key is set by the channel"):
        Options(url="https://example.cn/hook", headers={"Idempotency-Key": "x"})
    with pytest.raises(ValidationError, match="either bearer_token or an Authorization header"):
        Options(url="https://example.cn/hook", bearer_token="t", headers={"authorization": "x"})
    with pytest.raises(ValidationError):
        Options(url="https://example.cn/hook", method="GET")
