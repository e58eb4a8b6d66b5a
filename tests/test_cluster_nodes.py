"""Three real daemon processes on the real PostgreSQL: the targets split, a killed node's
targets move to the others without an incident, one leader and a successor on its death.

The targets are paths of one local HTTP server; every node sends its name in a header
(``${CSP_TEST_NODE}`` in the shared config: the file, hence the digest, is the same on
every node), so the server's log says which node probed which target.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.conftest import CustomerServer, unused_port, wait_until

CUSTOMERS = [f"c{i:02d}" for i in range(18)]
# bounded waits, generous for a busy 2-core machine; never a measure of speed
START_WITHIN = 60.0
SETTLE_WITHIN = 30.0


class ProbeLog(CustomerServer):
    """A local HTTP server answering 200 on /<customer> and noting which node asked."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[tuple[str, str]] = []  # (customer, node)
        self.failing: set[str] = set()  # customers whose target answers 503

    async def _handle(self, request: web.Request) -> web.Response:
        customer = request.match_info["customer"]
        self.hits.append((customer, request.headers.get("X-Node", "?")))
        return web.Response(status=503 if customer in self.failing else 200, text="ok")

    def probers(self) -> dict[str, set[str]]:
        """Which nodes probed each customer's target since the log was last cleared."""
        found: dict[str, set[str]] = {}
        for customer, node in self.hits:
            found.setdefault(customer, set()).add(node)
        return found


@dataclass
class Node:
    name: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    killed: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])


CONFIG = """
monitor:
  store: {store}
  data_dir: ./data-${{CSP_TEST_NODE}}  # own key files: three processes start at once
  audit_key: cluster-test-audit-key
  link_key: cluster-test-link-key
  cluster: {{node_id: "${{CSP_TEST_NODE}}", heartbeat_interval: 0.3s, dead_after: 2s}}
  # each node's own view of the world: a port given to it at start (open: it sees)
  canaries:
    - {{name: gateway, type: tcp, host: 127.0.0.1, port: "${{CSP_TEST_CANARY_PORT}}",
       timeout: 300ms}}
  blindness: {{interval: 500ms, retry_interval: 200ms, rounds: 2}}
# a generous timeout: a busy machine must not make a local target look down
defaults: {{interval: 1s, retry_interval: 0.5s, timeout: 5s, failure_threshold: 3}}
services:
  portal:
    name: Portal
    checks:
      - name: web
        type: http
        url: "http://127.0.0.1:{port}/{{customer.id}}"
        headers: {{X-Node: "${{CSP_TEST_NODE}}"}}
customers:
{customers}
"""


def write_config(path: Path, store: str, port: int) -> None:
    customers = "\n".join(
        f"  - {{id: {c}, name: {c}, tenant_domain: {c}.example, subscriptions: [portal]}}"
        for c in CUSTOMERS
    )
    path.write_text(CONFIG.format(store=store, port=port, customers=customers))


async def start_node(node: Node, config: Path, env: dict[str, str] | None = None) -> None:
    with node.log_path.open("ab") as log:
        node.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{node.port}",
            stdout=log,
            stderr=log,
            env={**os.environ, "CSP_TEST_NODE": node.name, **(env or {})},
        )


async def stop_nodes(nodes: Iterable[Node]) -> None:
    running = [n for n in nodes if n.process is not None and n.process.returncode is None]
    for node in running:
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
    for node in running:
        assert node.process is not None
        try:
            await asyncio.wait_for(node.process.wait(), 20)
        except TimeoutError:
            node.process.kill()
            await node.process.wait()


def kill_9(node: Node) -> None:
    assert node.process is not None
    node.process.send_signal(signal.SIGKILL)
    node.killed = True


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def owned(session: aiohttp.ClientSession, node: Node) -> set[str] | None:
    """The customers whose probe_* series the node exports (None when it does not answer)."""
    try:
        async with session.get(f"{node.url}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    prefix = 'probe_success{customer="'
    return {
        line[len(prefix) :].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith(prefix)
    }


async def split(session: aiohttp.ClientSession, nodes: list[Node]) -> dict[str, set[str]] | None:
    """Each node's targets, when together they cover every target exactly once."""
    shares: dict[str, set[str]] = {}
    for node in nodes:
        share = await owned(session, node)
        if share is None:
            return None
        shares[node.name] = share
    every = [c for share in shares.values() for c in share]
    if sorted(every) != sorted(CUSTOMERS):
        return None
    return shares


async def cluster_view(session: aiohttp.ClientSession, node: Node) -> dict[str, Any] | None:
    try:
        return dict(await get_json(session, f"{node.url}/api/v1/cluster"))
    except (aiohttp.ClientError, ValueError):
        return None


@pytest.fixture
async def probe_log() -> AsyncIterator[ProbeLog]:
    server = ProbeLog()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def cluster(
    tmp_path: Path, pg_database: str, probe_log: ProbeLog, request: pytest.FixtureRequest
) -> AsyncIterator[list[Node]]:
    """Three nodes on one config and one database, started together; stopped at the end."""
    config = tmp_path / "config.yaml"
    write_config(config, pg_database, probe_log.port)
    prefix = request.node.name.split("_")[1]  # distinct names per test: the database is shared
    nodes = [
        Node(f"{prefix}-{letter}", unused_port(), tmp_path / f"{letter}.log") for letter in "abc"
    ]
    try:
        for node in nodes:
            await start_node(node, config, {"CSP_TEST_CANARY_PORT": str(probe_log.port)})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def all_see_three() -> bool:
                for node in nodes:
                    view = await cluster_view(session, node)
                    if view is None or sum(m["alive"] for m in view["members"]) != 3:
                        return False
                return True

            try:
                await wait_until(all_see_three, START_WITHIN, "three nodes that see each other")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n" + "\n".join(n.log_tail() for n in nodes)) from None
        yield nodes
    finally:
        await stop_nodes(nodes)


async def settled_split(session: aiohttp.ClientSession, nodes: list[Node]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    async def covered() -> bool:
        result = await split(session, nodes)
        if result is None:
            return False
        found.clear()
        found.update(result)
        return True

    try:
        await wait_until(covered, SETTLE_WITHIN, "the targets split with none twice, none left")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(n.log_tail() for n in nodes)) from None
    return found


async def probed_once_each(probe_log: ProbeLog) -> dict[str, set[str]]:
    """Clear the server's log, wait until every target was probed twice, say by whom."""
    probe_log.hits.clear()
    await wait_until(
        lambda: all(
            sum(1 for c, _ in probe_log.hits if c == customer) >= 2 for customer in CUSTOMERS
        ),
        SETTLE_WITHIN,
        "every target to be probed",
    )
    return probe_log.probers()


async def history(database: str, customers: Iterable[str]) -> dict[str, list[tuple[str, bool]]]:
    """Each subscription's status intervals: (status, still open)."""
    rows = await _history_rows(database, customers)
    found: dict[str, list[tuple[str, bool]]] = {}
    for row in rows:
        found.setdefault(row["customer"], []).append((row["status"], row["ended_at"] is None))
    return found


async def _history_rows(database: str, customers: Iterable[str]) -> list[Any]:
    connection = await asyncpg.connect(database, timeout=10)
    try:
        return list(
            await connection.fetch(
                "SELECT customer, status, started_at, ended_at FROM status_intervals "
                "WHERE customer = ANY($1::text[]) ORDER BY customer, id",
                list(customers),
            )
        )
    finally:
        await connection.close()


async def incidents(session: aiohttp.ClientSession, node: Node) -> list[tuple[str, str, str]]:
    found = await get_json(session, f"{node.url}/api/v1/incidents?state=all")
    return sorted((i["id"], i["customer"], i["state"]) for i in found["incidents"])


async def test_targets_split_and_a_killed_followers_targets_move_without_incident(
    cluster: list[Node], probe_log: ProbeLog, pg_database: str
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        shares = await settled_split(session, cluster)
        assert all(shares.values()), f"a node probes nothing: {shares}"
        probers = await probed_once_each(probe_log)
        for node, share in shares.items():
            for customer in share:
                assert probers[customer] == {node}, (customer, probers[customer], node)

        view = await cluster_view(session, cluster[0])
        assert view is not None
        leaders = {m["node"] for m in view["members"] if m["leader"]}
        follower = next(n for n in cluster if n.name not in leaders)
        moved = shares[follower.name]
        # one of the follower's subscriptions is down, with its incident open
        sick = sorted(moved)[0]
        probe_log.failing.add(sick)

        async def sick_incident() -> bool:
            return [c for _, c, _ in await incidents(session, cluster[0])] == [sick]

        await wait_until(sick_incident, SETTLE_WITHIN, f"an incident for {sick}")
        before = await incidents(session, cluster[0])
        # each subscription's interval open at the kill: where its new owner starts from
        rows = {r["customer"]: r for r in await _history_rows(pg_database, moved)}

        kill_9(follower)
        survivors = [n for n in cluster if n is not follower]
        after = await settled_split(session, survivors)
        for node in survivors:
            assert shares[node.name] <= after[node.name], "a survivor lost a target of its own"
        probers = await probed_once_each(probe_log)
        for customer in moved:
            [node] = probers[customer]  # probed again, by one survivor
            assert node != follower.name and customer in after[node]
        # no incident opened or closed because of the move
        assert await incidents(session, survivors[0]) == before
        # the history of every moved subscription goes on, still open, after a gap from the
        # killed node's last heartbeat to the takeover: nobody probed it then
        expected = {c: [("up", False), ("unknown", False), ("up", True)] for c in moved}
        expected[sick] = [("up", False), ("down", False), ("unknown", False), ("down", True)]
        await wait_until(
            lambda: _history_is(pg_database, moved, expected), SETTLE_WITHIN, "the gaps recorded"
        )
        latest = {r["customer"]: r for r in await _history_rows(pg_database, moved)}
        # the new owners went on in the recorded status, known again since the takeover
        for node in survivors:
            status = await get_json(session, f"{node.url}/api/v1/status")
            # any node answers for every subscription, naming who probes it
            assert sorted(row["customer"] for row in status["subscriptions"]) == CUSTOMERS
            assert {row["customer"]: row["probed_by"] for row in status["subscriptions"]} == {
                customer: name for name, share in after.items() for customer in share
            }
            for row in status["subscriptions"]:
                if row["customer"] in moved:
                    recorded = latest[row["customer"]]
                    assert (row["status"], row["since"]) == (
                        recorded["status"],
                        recorded["started_at"],
                    ), row["customer"]
    gaps = [r for r in await _history_rows(pg_database, moved) if r["status"] == "unknown"]
    for gap in gaps:  # from the last heartbeat, about when it was killed, to the takeover
        assert gap["started_at"] >= rows[gap["customer"]]["started_at"]
        assert gap["ended_at"] > gap["started_at"]


async def _history_is(
    database: str, customers: Iterable[str], expected: dict[str, list[tuple[str, bool]]]
) -> bool:
    return await history(database, customers) == expected


async def test_one_leader_and_a_successor_in_a_higher_epoch_when_it_is_killed(
    cluster: list[Node],
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        views: dict[str, dict[str, Any]] = {}

        async def agreed_leader(nodes: list[Node]) -> bool:
            views.clear()
            for node in nodes:
                view = await cluster_view(session, node)
                if view is None:
                    return False
                views[node.name] = view
            leaders = {
                (m["node"], v["leader"]["epoch"])
                for v in views.values()
                for m in v["members"]
                if m["leader"] and v["leader"] and not v["leader"]["expired"]
            }
            return len(leaders) == 1 and all(
                sum(m["leader"] for m in v["members"]) == 1 for v in views.values()
            )

        await wait_until(lambda: agreed_leader(cluster), SETTLE_WITHIN, "one agreed leader")
        first = next(iter(views.values()))["leader"]
        leader = next(n for n in cluster if n.name == first["node"])
        leading = [n.name for n in cluster if _leads(await _metrics(session, n), n.name)]
        assert leading == [leader.name]

        kill_9(leader)
        survivors = [n for n in cluster if n is not leader]

        async def successor() -> bool:
            if not await agreed_leader(survivors):
                return False
            lease = next(iter(views.values()))["leader"]
            return bool(lease["node"] != leader.name)

        await wait_until(successor, SETTLE_WITHIN, "another node to take the lease over")
        second = next(iter(views.values()))["leader"]
        assert second["epoch"] > first["epoch"]
        assert second["node"] in {n.name for n in survivors}


async def test_a_blind_node_leaves_the_shard_to_the_nodes_that_see(
    cluster: list[Node], probe_log: ProbeLog, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await settled_split(session, cluster)
        # the module's tests share one database: what earlier tests opened is not ours
        earlier = {number for number, _, _ in await incidents(session, cluster[0])}
        blind = cluster[2]
        await stop_nodes([blind])
        # back with a canary nobody answers: it cannot see the world
        await start_node(
            blind, tmp_path / "config.yaml", {"CSP_TEST_CANARY_PORT": str(unused_port())}
        )

        async def is_blind() -> bool:
            try:
                return "csp_monitor_blind 1.0" in await _metrics(session, blind)
            except aiohttp.ClientError:
                return False

        await wait_until(is_blind, START_WITHIN, f"{blind.name} to find itself blind")
        seeing = cluster[:2]

        async def only_the_seeing_probe() -> bool:
            shares = await split(session, seeing)
            return shares is not None and await owned(session, blind) == set()

        try:
            await wait_until(only_the_seeing_probe, SETTLE_WITHIN, "the blind node's targets moved")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(n.log_tail() for n in cluster)) from None
        probers = await probed_once_each(probe_log)
        assert set().union(*probers.values()) <= {n.name for n in seeing}
        # nothing went down meanwhile
        opened = [i for i in await incidents(session, seeing[0]) if i[0] not in earlier]
        assert opened == [], "\n".join(n.log_tail() for n in cluster)


async def _metrics(session: aiohttp.ClientSession, node: Node) -> str:
    async with session.get(f"{node.url}/metrics") as response:
        return await response.text()


def _leads(metrics: str, name: str) -> bool:
    return f'csp_monitor_cluster_leader{{node="{name}"}} 1.0' in metrics
