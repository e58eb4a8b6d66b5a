"""One node, no cluster: a located check probed from the node's location, the quorum over
the listed locations, the location on the probe series, the status API and ``probe``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from tests.conftest import WebTarget, run_cli, unused_port, wait_until

CONFIG = """
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 2s
  location: sh-telecom
  source_address: 127.0.0.3
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 3s, failure_threshold: 2,
           success_threshold: 1}}
services:
  web-app:
    name: Customer web app
    checks:
      - {{name: alone, type: tcp, host: 127.0.0.1, port: {closed}, locations: [sh-telecom]}}
      - {{name: pair, type: http, url: "http://127.0.0.1:{port}/healthz",
         locations: [sh-telecom, bj-unicom], quorum: 1}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.example, subscriptions: [web-app]}}
"""


@pytest.fixture
async def config(tmp_path: Path, web_target: WebTarget) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(port=web_target.port, closed=unused_port()))
    return path


@pytest.fixture
async def daemon(config: Path) -> AsyncIterator[Daemon]:
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def get(daemon: Daemon, path: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"http://127.0.0.1:{daemon.bound_port}{path}")
        await response.read()
        return response


def check_status(daemon: Daemon, check: str) -> str:
    state = daemon.board.targets.get(f"contoso/web-app/{check}")
    return state.status.value if state else "none"


async def test_a_node_decides_from_its_own_location(daemon: Daemon) -> None:
    # one location of one: its down is the target's down, named
    await wait_until(lambda: check_status(daemon, "alone") == "down", what="alone down")
    assert daemon.board.targets["contoso/web-app/alone"].last_change_reason.startswith(
        "down from sh-telecom ("
    )
    # up here, and bj-unicom has no node: a quorum of one is enough to say up
    await wait_until(lambda: check_status(daemon, "pair") == "up", what="pair up")
    response = await get(daemon, "/api/v1/status")
    document = await response.json()
    checks = {c["check"]: c for c in document["subscriptions"][0]["checks"]}
    pair = checks["pair"]
    assert pair["quorum"] == 1
    assert [(loc["location"], loc["status"]) for loc in pair["locations"]] == [
        ("sh-telecom", "up"),
        ("bj-unicom", "unknown"),
    ]
    assert pair["locations"][0]["reported"]["node"] == "local"
    assert pair["locations"][1]["reported"] is None
    text = await metrics(daemon)
    assert 'check="pair",target="http://127.0.0.1:' in text
    assert '/healthz",location="sh-telecom"} 1' in text
    assert 'csp_monitor_location_up{location="sh-telecom"} 1.0' in text


async def metrics(daemon: Daemon) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}/metrics") as response,
    ):
        return await response.text()


async def test_probe_command_shows_each_location(config: Path) -> None:
    code, out, err = await run_cli("probe", "contoso", "web-app", "--config", str(config))
    assert code == 1, err  # the closed port
    assert "sh-telecom (this run): UP" in out
    assert "bj-unicom: no report" in out
    assert "quorum 1 of 2: up (up from sh-telecom, no recent report from bj-unicom)" in out
    assert "quorum 1 of 1: down (down from sh-telecom (" in out
