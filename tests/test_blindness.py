"""A node that cannot see the world pages its operators once and charges no customer with
downtime; a node whose canaries see pages a vendor-wide outage as usual. The daemon end to
end, on loopback: targets and canaries are local ports a test opens and closes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.probe import Status
from tests.conftest import unused_port, wait_until

SERVICES = ("exchange-online", "sharepoint-online", "azure-portal")
CUSTOMERS = ("contoso", "fabrikam")


class Port:
    """A local TCP port that accepts and hangs up, opened and closed by the test."""

    def __init__(self) -> None:
        self.port = unused_port()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self._server = await asyncio.start_server(hang_up, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@pytest.fixture
def silent_resolver() -> Iterator[int]:
    """A UDP port that takes DNS queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def ports() -> AsyncIterator[dict[str, Port]]:
    opened = {name: Port() for name in (*SERVICES, "gateway-a", "gateway-b")}
    for port in opened.values():
        await port.open()
    try:
        yield opened
    finally:
        for port in opened.values():
            await port.close()


def write_config(path: Path, ports: dict[str, Port], resolver_port: int) -> None:
    services = "\n".join(
        f"""  {service}:
    name: {service}
    checks:
      - {{name: port, type: tcp, host: 127.0.0.1, port: {ports[service].port}}}"""
        for service in SERVICES
    )
    customers = "\n".join(
        f"  - {{id: {c}, name: {c.title()} Ltd, tenant_domain: {c}.partner.onmschina.cn, "
        f"subscriptions: [{', '.join(SERVICES)}]}}"
        for c in CUSTOMERS
    )
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 1s
  canaries:
    - {{name: gateway-a, type: tcp, host: 127.0.0.1, port: {ports["gateway-a"].port},
       timeout: 300ms}}
    - {{name: gateway-b, type: tcp, host: 127.0.0.1, port: {ports["gateway-b"].port},
       timeout: 300ms}}
    - {{name: resolver, type: dns, query: partner.outlook.cn,
       resolver: "127.0.0.1:{resolver_port}", timeout: 300ms}}
  blindness: {{interval: 500ms, retry_interval: 200ms, rounds: 2, burst_services: 2,
              burst_window: 5s}}
  ops_channels: [ops]
defaults: {{interval: 200ms, retry_interval: 300ms, timeout: 1s, failure_threshold: 3,
           success_threshold: 1}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  correlation: {{enabled: false}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [pages]}}
notifications: {{poll_interval: 100ms}}
channels:
  pages: {{type: file, directory: pages}}
  ops: {{type: file, directory: ops}}
services:
{services}
customers:
{customers}
""")


@pytest.fixture
async def daemon(
    tmp_path: Path, ports: dict[str, Port], silent_resolver: int
) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.yaml"
    write_config(config, ports, silent_resolver)
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


def statuses(daemon: Daemon) -> set[Status]:
    return {state.status for state in daemon.board.subscriptions.values()}


def files(folder: Path, event: str) -> list[Path]:
    return sorted(folder.glob(f"*-{event}-*")) if folder.is_dir() else []


async def test_a_blind_node_opens_no_incident_and_tells_its_operators_once(
    daemon: Daemon, ports: dict[str, Port], tmp_path: Path
) -> None:
    await wait_until(lambda: statuses(daemon) == {Status.UP}, what="every subscription up")
    # the host loses the world: every target and most canaries fail to connect
    for port in ports.values():
        await port.close()
    await wait_until(lambda: daemon.sight.sight.blind, what="the node blind")
    await wait_until(lambda: statuses(daemon) == {Status.UNKNOWN}, what="every status unknown")
    await wait_until(lambda: len(files(tmp_path / "ops", "blind")) == 1, what="the ops message")
    await asyncio.sleep(1.0)  # probes and canary rounds go on while blind
    store = daemon.alerting.store
    assert store is not None
    assert await store.list_incidents() == []
    assert files(tmp_path / "pages", "opened") == []
    [blind] = files(tmp_path / "ops", "blind")
    text = blind.read_text()
    assert f"Monitoring blind from {daemon.sight.node} since" in text
    assert "gateway-a (tcp): FAILED: connection refused" in text
    assert "监控节点" in text
    _, metrics = await get_metrics(daemon)
    assert "csp_monitor_blind 1.0" in metrics
    assert 'csp_monitor_canary_success{canary="gateway-a"} 0.0' in metrics

    # the world comes back
    for port in ports.values():
        await port.open()
    await wait_until(lambda: not daemon.sight.sight.blind, what="sight restored")
    await wait_until(
        lambda: len(files(tmp_path / "ops", "sight_restored")) == 1, what="the resolution"
    )
    await wait_until(lambda: statuses(daemon) == {Status.UP}, what="every subscription up again")
    await daemon.alerting.drain()
    assert await store.list_incidents() == []
    assert len(files(tmp_path / "ops", "blind")) == 1
    # the history charges no customer: a coverage gap, never downtime
    for customer in CUSTOMERS:
        for service in SERVICES:
            history = {i.status for i in await store.status_intervals(customer, service)}
            assert "unknown" in history, (customer, service, history)
            assert "down" not in history, (customer, service, history)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    code, body = await get(daemon, f"/api/v1/reports/uptime?period={day}..{day}&format=json")
    assert code == 200
    rows = [row for c in json.loads(body)["customers"] for row in c["subscriptions"]]
    assert len(rows) == len(CUSTOMERS) * len(SERVICES)
    for row in rows:
        assert row["minutes"]["down"] == 0 and row["downtime_minutes"] == 0, row
        assert row["minutes"]["unknown"] > 0, row


async def test_every_target_failing_while_the_canaries_see_pages_as_usual(
    daemon: Daemon, ports: dict[str, Port], tmp_path: Path
) -> None:
    await wait_until(lambda: statuses(daemon) == {Status.UP}, what="every subscription up")
    for service in SERVICES:  # a vendor-wide outage: the gateways still answer
        await ports[service].close()
    await wait_until(lambda: statuses(daemon) == {Status.DOWN}, what="every subscription down")
    store = daemon.alerting.store
    assert store is not None
    await wait_until(
        lambda: len(files(tmp_path / "pages", "opened")) == len(SERVICES) * len(CUSTOMERS),
        what="one page per subscription",
    )
    incidents = await store.list_incidents()
    assert {(i.customer, i.service) for i in incidents} == {
        (c, s) for c in CUSTOMERS for s in SERVICES
    }
    assert not daemon.sight.sight.blind
    assert files(tmp_path / "ops", "blind") == []


async def get(daemon: Daemon, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}{path}") as response,
    ):
        return response.status, await response.text()


async def get_metrics(daemon: Daemon) -> tuple[int, str]:
    return await get(daemon, "/metrics")


async def test_a_blindness_that_outlasts_a_restart_is_announced_once_and_resolved(
    tmp_path: Path, ports: dict[str, Port], silent_resolver: int
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, ports, silent_resolver)
    for port in ports.values():
        await port.close()
    first = Daemon(config)
    await first.start()
    try:
        await wait_until(lambda: len(files(tmp_path / "ops", "blind")) == 1, what="blind")
    finally:
        await first.close()
    second = Daemon(config)
    await second.start()
    try:
        await wait_until(lambda: second.sight.sight.blind, what="blind again after the restart")
        await asyncio.sleep(0.5)
        assert len(files(tmp_path / "ops", "blind")) == 1  # the same blindness, told once
        for port in ports.values():
            await port.open()
        await wait_until(
            lambda: len(files(tmp_path / "ops", "sight_restored")) == 1, what="the resolution"
        )
        [restored] = files(tmp_path / "ops", "sight_restored")
        [blind] = files(tmp_path / "ops", "blind")
        episode = blind.read_text().split("Incident: ")[1].split("\n")[0]
        assert f"Incident: {episode}\n" in restored.read_text()  # the same episode
        store = second.alerting.store
        assert store is not None and await store.list_incidents() == []
    finally:
        await second.close()
