"""The HTTP API against bad input: a real daemon, real sockets, every answer a clear 4xx.

Bad bytes, absurd nesting, wrong JSON types, oversized text, forged or mangled
links and tokens must each be refused with a status and a message naming what
was wrong, never a 500 and never a half-applied change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.engine.model import Incident
from tests.conftest import WebTarget, wait_until

OPERATE = "noc-operate-token"
READ = "grafana-read-token"


def write_config(path: Path, port: int, *, protect_reads: bool) -> None:
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  public_url: http://127.0.0.1:1
  shutdown_grace: 1s
  protect_reads: {str(protect_reads).lower()}
  api_tokens:
    - {{name: noc, token: {OPERATE}, roles: [operate]}}
    - {{name: grafana, token: {READ}, roles: [read]}}
defaults: {{interval: 200ms, retry_interval: 100ms, timeout: 1s, failure_threshold: 1,
           success_threshold: 1}}
incidents:
  default_policy: standard
  tick_interval: 100ms
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [outbox]}}
notifications:
  poll_interval: 100ms
channels:
  outbox: {{type: file, directory: outbox}}
services:
  exchange-online:
    name: Exchange Online
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{port}/healthz"}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}}
""")


async def start_daemon(tmp_path: Path, web_target: WebTarget, protect_reads: bool) -> Daemon:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, protect_reads=protect_reads)
    instance = Daemon(config)
    await instance.start()
    return instance


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    instance = await start_daemon(tmp_path, web_target, protect_reads=True)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def incident(daemon: Daemon, web_target: WebTarget) -> Incident:
    """An open incident (the monitored service answers 503)."""
    manager = daemon.alerting.manager
    assert manager is not None
    web_target.status = 503

    async def opened() -> bool:
        return bool(await manager.list_incidents())

    await wait_until(opened, what="an incident")
    [found] = await manager.list_incidents()
    return found


async def call(
    daemon: Daemon,
    method: str,
    path: str,
    *,
    token: str | None = OPERATE,
    body: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> tuple[int, str]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = aiohttp.helpers.json.dumps(json_body).encode()  # type: ignore[attr-defined]
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"http://127.0.0.1:{daemon.bound_port}{path}",
            data=body if body is not None else data,
            headers=sent,
        ) as response,
    ):
        return response.status, await response.text()


async def raw_request(daemon: Daemon, request: bytes) -> tuple[int, bytes]:
    """Send bytes aiohttp's client would refuse to send (raw header bytes), return the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.bound_port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


# ------------------------------------------------------------------ item: protect_reads


async def test_protect_reads_covers_the_status_endpoint_but_not_metrics(daemon: Daemon) -> None:
    status, _ = await call(daemon, "GET", "/api/v1/status", token=None)
    assert status == 401
    status, text = await call(daemon, "GET", "/api/v1/status", token=READ)
    assert status == 200 and "subscriptions" in text
    for open_path in ("/metrics", "/healthz", "/readyz"):
        status, _ = await call(daemon, "GET", open_path, token=None)
        assert status == 200, open_path


async def test_status_stays_open_without_protect_reads(
    tmp_path: Path, web_target: WebTarget
) -> None:
    instance = await start_daemon(tmp_path, web_target, protect_reads=False)
    try:
        status, _ = await call(instance, "GET", "/api/v1/status", token=None)
        assert status == 200
    finally:
        await instance.close()
