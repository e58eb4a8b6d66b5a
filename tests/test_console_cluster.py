"""The console in a cluster: signed in on any node, an engineer sees the board and the
incident page and acknowledges from a node that does not lead (the request, its session
cookie and CSRF token with it, goes to the leader); the status links are the same on
every node. Two daemons in one process on the real PostgreSQL, each with its own data
directory, so no key file is shared by accident."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.console.keys import SESSION, STATUS_PAGE, console_key
from monitor.daemon import Daemon
from tests.conftest import unused_port, wait_until

WITHIN = 30.0  # bounded waits for a busy machine; never a measure of speed

CONFIG = """
monitor:
  listen: 127.0.0.1:{listen}
  public_url: http://127.0.0.1:{listen}
  data_dir: ./data-{node}
  store: {store}
  audit_key: console-cluster-audit-key
  link_key: console-cluster-link-key
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
  # nothing here waits for a failover: a lease that a busy machine (tests in parallel)
  # cannot lose between two heartbeats
  cluster: {{node_id: {node}, heartbeat_interval: 1s, dead_after: 10s}}
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 1s, failure_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 200ms
  correlation: {{enabled: false}}
escalation_policies:
  standard:
    steps: [{{after: 0s, notify: [outbox]}}, {{after: 1h, notify: [outbox]}}]
notifications: {{poll_interval: 200ms}}
channels:
  outbox: {{type: file, directory: outbox-{node}}}
services:
  portal:
    name: Azure portal
    checks: [{{name: web, type: tcp, host: 127.0.0.1, port: {closed}}}]
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [portal]}}
"""


@pytest.fixture
async def nodes(tmp_path: Path, pg_database: str) -> AsyncIterator[list[Daemon]]:
    closed = unused_port()  # nothing listens: the portal is down
    started: list[Daemon] = []
    try:
        for node in ("node-a", "node-b"):
            config = tmp_path / f"{node}.yaml"
            config.write_text(
                CONFIG.format(listen=unused_port(), node=node, store=pg_database, closed=closed)
            )
            daemon = Daemon(config)
            started.append(daemon)
            await daemon.start()
        yield started
    finally:
        for daemon in reversed(started):
            await daemon.close()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_a_follower_serves_the_console_and_an_ack_made_there_reaches_the_leader(
    nodes: list[Daemon],
) -> None:
    await wait_until(lambda: sum(d.incidents is not None for d in nodes) == 1, WITHIN, "one leader")
    [leader] = [d for d in nodes if d.incidents is not None]
    [follower] = [d for d in nodes if d is not leader]
    manager = leader.incidents
    assert manager is not None
    await wait_until(lambda: manager.open_incidents(), WITHIN, "contoso's incident")
    [incident] = manager.open_incidents()

    base = f"http://127.0.0.1:{follower.bound_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/signin") as response:
            form = {"csrf": _csrf(await response.text()), "token": "noc-token"}
        async with session.post(
            f"{base}/signin", data={**form, "person": "Li Wei", "next": "/board"}
        ) as response:
            # the follower signed in; its board comes from the leader
            assert response.status == 200 and response.url.path == "/board"
            board = await response.text()
            assert incident.id in board
            assert "Content-Security-Policy" in response.headers
        async with session.get(f"{base}/incidents/{incident.id}") as response:
            assert response.status == 200 and response.url.path == f"/incidents/{incident.id}"
            page = await response.text()
        async with session.post(
            f"{base}/incidents/{incident.id}/ack", data={"csrf": _csrf(page)}
        ) as response:
            assert response.status == 200
            assert response.url.query.get("done") == "acknowledged"
        status_link = re.search(r'id="status-link" href="([^"]+)"', page)
        assert status_link
        async with session.get(f"{base}{status_link.group(1)}") as response:
            assert response.status == 200 and "Azure portal" in await response.text()

    [acknowledged] = manager.open_incidents()
    assert (acknowledged.state.value, acknowledged.acknowledged_by) == (
        "acknowledged",
        "Li Wei (noc)",
    )
    # the keys are the same on both nodes though their data directories differ
    keys = {
        purpose: {
            console_key(d.catalog, d.config_path.parent, purpose)  # type: ignore[arg-type]
            for d in nodes
        }
        for purpose in (SESSION, STATUS_PAGE)
    }
    assert len(keys[SESSION]) == 1 and len(keys[STATUS_PAGE]) == 1
    assert keys[SESSION] != keys[STATUS_PAGE]
