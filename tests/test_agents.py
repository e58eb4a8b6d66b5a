"""Probe agents for real: one daemon process (SQLite, no cluster) probing from sh-telecom and
two ``csp-monitor agent`` processes probing from bj-unicom and gz-mobile, each location
from its own source address, against a server that fails requests from chosen addresses.

The bj-unicom agent reaches the daemon through a proxy the test can cut: results it
sees meanwhile wait in its buffer and arrive afterwards, recorded at their own times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PathServer, unused_port, wait_until
from tests.test_cluster_nodes import Node, get_json, start_node, stop_nodes
from tests.test_locations_nodes import REASON

SOURCES = {"sh-telecom": "127.0.0.2", "bj-unicom": "127.0.0.3", "gz-mobile": "127.0.0.4"}
TOKEN = "agents-test-token-6f1c0b"
TARGET = "contoso/portal/web"
WITHIN = 60.0  # bounded waits, generous for a busy 2-core machine

CONFIG = """
monitor:
  store: sqlite:///{tmp}/store.db
  data_dir: {tmp}/data
  location: sh-telecom
  source_address: 127.0.0.2
  api_tokens:
    - {{name: probe-agents, token: "${{CSP_TEST_AGENT_TOKEN}}", roles: [agent],
       locations: [bj-unicom, gz-mobile]}}
    - {{name: noc, token: noc-test-token-0b8e2f, roles: [operate]}}
incidents: {{tick_interval: 0.5s}}
defaults:
  interval: 0.5s
  retry_interval: 0.25s
  timeout: 2s
  failure_threshold: 2
  success_threshold: 1
  locations: [sh-telecom, bj-unicom, gz-mobile]
services:
  portal:
    name: Portal
    checks:
      - {{name: web, type: http, url: "http://127.0.0.1:{port}/{{customer.id}}"}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.example, subscriptions: [portal]}}
"""


class CuttableProxy:
    """Passes TCP connections to ``port``; ``cut()`` breaks them and refuses new ones (by
    closing them at once) until ``restore()``: a location cut off from the server."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.cut_off = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._open |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._open):
            writer.close()

    def restore(self) -> None:
        self.cut_off = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Stack:
    daemon: Node
    agents: dict[str, Node]
    proxy: CuttableProxy
    server: PathServer
    logs: list[Path] = field(default_factory=list)

    def tails(self) -> str:
        return "\n".join(node.log_tail(25) for node in [self.daemon, *self.agents.values()])


async def start_agent(node: Node, server: str, location: str) -> None:
    with node.log_path.open("ab") as log:
        node.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.cli",
            "agent",
            "--server",
            server,
            "--location",
            location,
            "--name",
            node.name,
            "--source-address",
            SOURCES[location],
            "--push-every",
            "0.3",
            "--reload-every",
            "2",
            stdout=log,
            stderr=log,
            env={**os.environ, "CSP_MONITOR_AGENT_TOKEN": TOKEN},
        )


@pytest.fixture
async def stack(tmp_path: Path, path_server: PathServer) -> AsyncIterator[Stack]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, port=path_server.port))
    daemon = Node("daemon", unused_port(), tmp_path / "daemon.log")
    agents = {
        location: Node(f"agent-{location}", 0, tmp_path / f"agent-{location}.log")
        for location in ("bj-unicom", "gz-mobile")
    }
    proxy = CuttableProxy(daemon.port)
    await proxy.start()
    try:
        await start_node(daemon, config, {"CSP_TEST_AGENT_TOKEN": TOKEN})
        await start_agent(agents["bj-unicom"], f"http://127.0.0.1:{proxy.port}", "bj-unicom")
        await start_agent(agents["gz-mobile"], daemon.url, "gz-mobile")
        yield Stack(daemon, agents, proxy, path_server)
    finally:
        await stop_nodes([*agents.values(), daemon])
        await proxy.stop()


async def check(stack: Stack) -> dict[str, Any] | None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        try:
            document = await get_json(session, f"{stack.daemon.url}/api/v1/status")
        except (aiohttp.ClientError, ValueError):
            return None
    for row in document["subscriptions"]:
        for found in row["checks"]:
            return {"subscription": row["status"], **found}
    return None


async def wait_for(stack: Stack, what: str, condition: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def holds() -> bool:
        found = await check(stack)
        seen.clear()
        seen.update(found or {})
        return found is not None and bool(condition(found))

    try:
        await wait_until(holds, WITHIN, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast seen: {seen}\n{stack.tails()}") from None
    return dict(seen)


def by_location(found: dict[str, Any]) -> dict[str, str]:
    return {loc["location"]: loc["status"] for loc in found["locations"]}


async def incidents(stack: Stack) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        document = await get_json(session, f"{stack.daemon.url}/api/v1/incidents?state=all")
    return list(document["incidents"])


async def metrics(stack: Stack) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{stack.daemon.url}/metrics") as response,
    ):
        return await response.text()


async def history(stack: Stack) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        document = await get_json(
            session, f"{stack.daemon.url}/api/v1/locations/history?target={TARGET}&hours=1"
        )
    return list(document["changes"])


EVERY_LOCATION_UP = {"sh-telecom": "up", "bj-unicom": "up", "gz-mobile": "up"}


async def test_agents_count_in_the_quorum_and_a_broken_path_is_not_an_outage(
    stack: Stack,
) -> None:
    found = await wait_for(
        stack, "up from every location", lambda f: by_location(f) == EVERY_LOCATION_UP
    )
    reporters = {loc["location"]: loc["reported"]["node"] for loc in found["locations"]}
    assert reporters == {
        "sh-telecom": "local",
        "bj-unicom": "agent-bj-unicom",
        "gz-mobile": "agent-gz-mobile",
    }
    assert stack.server.sources == set(SOURCES.values())  # each from its own address
    # each location's probes are series of their own, the agents' included
    text = await metrics(stack)
    for location in SOURCES:
        assert any(
            line.startswith('probe_success{customer="contoso"')
            and f'location="{location}"}} 1' in line
            for line in text.splitlines()
        ), location

    stack.server.failing = {SOURCES["bj-unicom"]}
    found = await wait_for(
        stack,
        "degraded: down from bj-unicom only",
        lambda f: f["status"] == "degraded" and f["reason"].startswith("down from bj-unicom ("),
    )
    assert found["reason"] == f"down from bj-unicom ({REASON}), up from sh-telecom, gz-mobile"
    assert all(incident["status"] != "down" for incident in await incidents(stack))

    stack.server.failing = set(SOURCES.values())
    await wait_for(
        stack,
        "down from every location",
        lambda f: f["status"] == "down" and set(by_location(f).values()) == {"down"},
    )

    async def one_down_incident() -> bool:
        return [i["status"] for i in await incidents(stack) if i["state"] != "resolved"] == ["down"]

    await wait_until(one_down_incident, WITHIN, "one open incident, down")
    assert len(await incidents(stack)) == 1

    stack.server.failing = set()
    await wait_for(stack, "up again", lambda f: by_location(f) == EVERY_LOCATION_UP)


async def test_a_killed_agent_leaves_its_location_unknown_and_opens_nothing(
    stack: Stack,
) -> None:
    await wait_for(stack, "up from every location", lambda f: by_location(f) == EVERY_LOCATION_UP)
    agent = stack.agents["gz-mobile"]
    assert agent.process is not None
    agent.process.send_signal(signal.SIGKILL)
    silent = "up from sh-telecom, bj-unicom, no recent report from gz-mobile"
    found = await wait_for(
        stack,
        "gz-mobile unknown, and said so",
        lambda f: by_location(f)["gz-mobile"] == "unknown" and f["reason"] == silent,
    )
    # two of three still answer: a quorum of two says up
    assert found["status"] == "up"
    assert await incidents(stack) == []

    async def bj_unicom_up() -> bool:  # exported at the daemon's next exchange tick
        return 'csp_monitor_location_up{location="bj-unicom"} 1.0' in await metrics(stack)

    await wait_until(bj_unicom_up, WITHIN, "bj-unicom's agent counted up")


async def test_a_cut_off_agent_sends_what_it_saw_late_at_its_own_times(stack: Stack) -> None:
    await wait_for(stack, "up from every location", lambda f: by_location(f) == EVERY_LOCATION_UP)
    stack.proxy.cut()
    cut_at = time.time()
    await wait_for(
        stack, "bj-unicom silent, then unknown", lambda f: by_location(f)["bj-unicom"] == "unknown"
    )
    # while nobody hears it, the agent sees the target fail from bj-unicom, then recover
    stack.server.failing = {SOURCES["bj-unicom"]}
    await wait_until(
        lambda: "down" in (stack.agents["bj-unicom"].log_path.read_text()),
        WITHIN,
        "the cut-off agent sees the target down",
    )
    failed_at = time.time()
    stack.server.failing = set()
    await asyncio.sleep(2.0)  # a few more intervals seen while cut off
    assert [c for c in await history(stack) if c["since"] > cut_at] == []  # nothing came
    stack.proxy.restore()
    restored_at = time.time()

    async def arrived() -> bool:
        return any(
            c["location"] == "bj-unicom" and c["status"] == "up" and c["since"] > failed_at
            for c in await history(stack)
        )

    await wait_until(arrived, WITHIN, "the buffered results")
    bj = [
        (c["status"], c["since"])
        for c in await history(stack)
        if c["location"] == "bj-unicom" and c["since"] > cut_at
    ]
    # down and up again, both at the times the agent saw them: before it could tell anyone
    assert [status for status, _ in bj] == ["down", "up"], bj
    assert all(cut_at < since < restored_at for _, since in bj), (bj, cut_at, restored_at)
    # and nothing of it became an incident: the other two locations saw it up
    assert await incidents(stack) == []
    await wait_for(stack, "bj-unicom heard again", lambda f: by_location(f) == EVERY_LOCATION_UP)
