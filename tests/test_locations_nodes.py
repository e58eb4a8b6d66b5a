"""Three real daemon processes, one per location, each probing from its own source address.

The target is one local HTTP server that fails the requests coming from chosen
source addresses: a broken path from one location makes the target degraded,
naming that location, and opens no ``down`` incident; failing from every
location makes it down with exactly one incident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import PathServer, unused_port, wait_until
from tests.test_cluster_nodes import Node, get_json, start_node, stop_nodes

LOCATIONS = {"loc-a": "127.0.0.2", "loc-b": "127.0.0.3", "loc-c": "127.0.0.4"}
REASON = "status 503 (expected 200)"
START_WITHIN = 60.0  # bounded waits, generous for a busy 2-core machine
SETTLE_WITHIN = 30.0

CONFIG = """
monitor:
  store: {store}
  data_dir: ./data-${{CSP_TEST_NODE}}
  audit_key: locations-test-audit-key
  link_key: locations-test-link-key
  location: ${{CSP_TEST_LOCATION}}
  source_address: ${{CSP_TEST_SOURCE}}
  cluster: {{node_id: "${{CSP_TEST_NODE}}", heartbeat_interval: 0.3s, dead_after: 2s}}
incidents: {{tick_interval: 0.5s}}
defaults:
  interval: 1s
  retry_interval: 0.3s
  timeout: 2s
  failure_threshold: 2
  success_threshold: 1
  locations: [loc-a, loc-b, loc-c]
services:
  portal:
    name: Portal
    checks:
      - {{name: web, type: http, url: "http://127.0.0.1:{port}/{{customer.id}}"}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.example, subscriptions: [portal]}}
"""


@pytest.fixture
async def located(
    tmp_path: Path, pg_database: str, path_server: PathServer
) -> AsyncIterator[list[Node]]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(store=pg_database, port=path_server.port))
    nodes = [Node(location, unused_port(), tmp_path / f"{location}.log") for location in LOCATIONS]
    try:
        for node in nodes:
            env = {"CSP_TEST_LOCATION": node.name, "CSP_TEST_SOURCE": LOCATIONS[node.name]}
            await start_node(node, config, env)
        yield nodes
    finally:
        await stop_nodes(nodes)


async def decided(session: aiohttp.ClientSession, nodes: list[Node]) -> dict[str, Any] | None:
    """The check as the node that decides it shows it (with every location's report)."""
    for node in nodes:
        try:
            document = await get_json(session, f"{node.url}/api/v1/status?customer=contoso")
        except (aiohttp.ClientError, ValueError):
            return None
        for row in document["subscriptions"]:
            if row.get("checks") and "locations" in row["checks"][0]:
                return {"subscription": row, "check": row["checks"][0], "node": node.name}
    return None


async def incidents(database: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(database, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT status, state FROM incidents WHERE customer = 'contoso' ORDER BY opened_at"
        )
    finally:
        await connection.close()
    return [(row["status"], row["state"]) for row in rows]


async def test_one_broken_path_is_degraded_and_all_broken_is_down(
    located: list[Node], path_server: PathServer, pg_database: str
) -> None:
    nodes = located
    seen: dict[str, Any] = {}

    async def wait_for(what: str, condition: Any) -> dict[str, Any]:
        async def holds() -> bool:
            found = await decided(session, nodes)
            seen.clear()
            seen.update(found or {})
            return found is not None and bool(condition(found))

        try:
            await wait_until(holds, START_WITHIN, what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nlast seen: {seen}\n" + "\n".join(n.log_tail() for n in nodes)
            ) from None
        return dict(seen)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        every_location_up = await wait_for(
            "the target up from every location",
            lambda found: [loc["status"] for loc in found["check"]["locations"]] == ["up"] * 3,
        )
        assert every_location_up["subscription"]["status"] == "up"
        # each location's probes left from its own address
        assert path_server.sources == set(LOCATIONS.values())
        reporters = {
            loc["location"]: loc["reported"]["node"]
            for loc in every_location_up["check"]["locations"]
        }
        assert reporters == {name: name for name in LOCATIONS}

        path_server.failing = {LOCATIONS["loc-b"]}
        degraded = await wait_for(
            "degraded: down from loc-b only",
            lambda found: (
                found["subscription"]["status"] == "degraded"
                and found["check"]["reason"].startswith("down from loc-b (status 503")
            ),
        )
        assert degraded["check"]["status"] == "degraded"
        assert degraded["check"]["reason"].endswith("up from loc-a, loc-c")
        by_location = {loc["location"]: loc["status"] for loc in degraded["check"]["locations"]}
        assert by_location == {"loc-a": "up", "loc-b": "down", "loc-c": "up"}
        # a path problem: the incident (if any) is a degradation, never down
        assert all(status != "down" for status, _ in await incidents(pg_database))

        path_server.failing = set(LOCATIONS.values())
        # down once two agree (the quorum), whichever two report first; then all three
        down = await wait_for(
            "down from every location",
            lambda found: (
                found["subscription"]["status"] == "down"
                and [loc["status"] for loc in found["check"]["locations"]] == ["down"] * 3
            ),
        )
        assert down["check"]["reason"] == ", ".join(
            f"down from loc-a ({REASON})" if name == "loc-a" else f"{name} ({REASON})"
            for name in LOCATIONS
        )

        async def one_down_incident() -> bool:
            found = await incidents(pg_database)
            return [status for status, state in found if state != "resolved"] == ["down"]

        await wait_until(one_down_incident, SETTLE_WITHIN, "one open incident, down")
        assert len(await incidents(pg_database)) == 1
