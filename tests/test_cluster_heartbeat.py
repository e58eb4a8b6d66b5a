"""A busy event loop does not get a node declared dead; a wedged one does.

Two nodes on the real PostgreSQL: node B a real daemon process, node A a daemon in
this test's process, on this test's event loop, so that the test blocks A's loop
for real (``time.sleep`` in the test: nothing else runs on that loop meanwhile),
as a start-up or a reshard of tens of thousands of targets does. What B does about
it is read from B's own log and API afterwards.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import monitor.daemon_cluster
from monitor.cluster.heartbeat import stuck_after
from monitor.daemon import Daemon
from tests.conftest import unused_port, wait_until
from tests.test_cluster_nodes import Node, cluster_view, start_node, stop_nodes

CUSTOMERS = [f"c{i:02d}" for i in range(12)]
DEAD_AFTER = 2.0
# bounded waits, generous for a busy 2-core machine; never a measure of speed
START_WITHIN = 60.0

CONFIG = """
monitor:
  store: {store}
  data_dir: ./data-${{CSP_TEST_NODE}}
  audit_key: cluster-test-audit-key
  link_key: cluster-test-link-key
  shutdown_grace: 1s
  cluster: {{node_id: "${{CSP_TEST_NODE}}", heartbeat_interval: 0.3s, dead_after: {dead}s}}
defaults: {{interval: 1s, retry_interval: 0.5s, timeout: 5s, failure_threshold: 3}}
services:
  portal:
    name: Portal
    checks:
      - {{name: web, type: http, url: "http://127.0.0.1:{port}/{{customer.id}}"}}
customers:
{customers}
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def target_port() -> Iterator[int]:
    """The probed service, in threads of its own: it answers while A's loop is blocked."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Pair:
    a: Daemon  # in this process, on this test's loop
    b: Node  # a process of its own
    name_a: str
    name_b: str

    def b_log(self) -> str:
        return self.b.log_path.read_text(errors="replace")


@pytest.fixture
async def pair(
    tmp_path: Path,
    pg_database: str,
    target_port: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pair]:
    """A starts alone and takes every target; B joins and takes about half of them: A
    gives them up in steps of two subscriptions (the step made small to take several)."""
    monkeypatch.setattr(monitor.daemon_cluster, "RESHARD_STEP", 2)
    config = tmp_path / "config.yaml"
    customers = "\n".join(
        f"  - {{id: {c}, name: {c}, tenant_domain: {c}.example, subscriptions: [portal]}}"
        for c in CUSTOMERS
    )
    config.write_text(
        CONFIG.format(store=pg_database, port=target_port, dead=DEAD_AFTER, customers=customers)
    )
    prefix = request.node.name.split("_")[2]  # distinct names per test: the database is shared
    name_a, name_b = f"{prefix}-a", f"{prefix}-b"
    b = Node(name_b, unused_port(), tmp_path / "b.log")
    a = Daemon(
        config,
        env={**os.environ, "CSP_TEST_NODE": name_a},
        listen=f"127.0.0.1:{unused_port()}",
    )
    started = False
    try:
        await a.start()
        started = True
        assert a.scheduled_targets == len(CUSTOMERS)
        await start_node(b, config)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def both_share() -> bool:
                view = await cluster_view(session, b)
                if view is None or a.cluster is None:
                    return False
                targets = {m["node"]: m["targets"] for m in view["members"] if m["alive"]}
                return (
                    # each target exactly once: A's steps left none twice, none out
                    a.cluster.peers == (name_a, name_b)
                    and set(targets) == {name_a, name_b}
                    and all(targets.values())
                    and sum(targets.values()) == len(CUSTOMERS)
                    and a.scheduled_targets == targets[name_a]
                )

            try:
                await wait_until(both_share, START_WITHIN, "A and B sharing the targets")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{b.log_tail(30)}") from None
        yield Pair(a, b, name_a, name_b)
    finally:
        if started:
            await a.close()
        await stop_nodes([b])


def block_the_loop(seconds: float) -> None:
    """Nothing runs on this test's loop (node A's) meanwhile: a start-up or a reshard
    scheduling tens of thousands of jobs in one go looks like this."""
    time.sleep(seconds)


def b_declared_a_dead(pair: Pair, log: str) -> bool:
    return (
        f"event=cluster_members_changed node={pair.name_b} "
        f"before={pair.name_a},{pair.name_b} after={pair.name_b}"
    ) in log


async def test_a_node_whose_loop_is_busy_longer_than_dead_after_keeps_its_targets(
    pair: Pair,
) -> None:
    seen = len(pair.b_log())
    block_the_loop(3 * DEAD_AFTER)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        # B reads the members every 0.3 s: had A been silent for 2 s, it would have said so
        # by now; a few more of its heartbeats make sure nothing was still on the way
        beats: set[str] = set()

        async def b_beat_again() -> bool:
            view = await cluster_view(session, pair.b)
            if view is not None:
                beats.update(
                    m["last_heartbeat"] for m in view["members"] if m["node"] == pair.name_b
                )
            return len(beats) > 3

        await wait_until(b_beat_again, 20.0, "B's next heartbeats")
        view = await cluster_view(session, pair.b)
    since = pair.b_log()[seen:]
    assert not b_declared_a_dead(pair, since), since
    assert "event=cluster_reshard" not in since, since
    assert view is not None
    targets = {m["node"]: m["targets"] for m in view["members"] if m["alive"]}
    assert set(targets) == {pair.name_a, pair.name_b} and all(targets.values())
    assert sum(targets.values()) == len(CUSTOMERS)


async def test_a_node_whose_loop_is_wedged_is_declared_dead_and_its_targets_move(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pair.a.cluster is not None
    heartbeats = pair.a.cluster._heartbeats
    assert heartbeats is not None, "node A beats from its heartbeat thread"
    # the bound a wedged loop is given, brought down to 3 × dead_after for the test
    monkeypatch.setattr(heartbeats, "stuck_after", 3 * DEAD_AFTER)
    a_share = pair.a.scheduled_targets
    seen = len(pair.b_log())
    block_the_loop(3 * DEAD_AFTER + DEAD_AFTER + 4.0)
    since = pair.b_log()[seen:]
    assert b_declared_a_dead(pair, since), pair.b.log_tail(30)
    [added] = re.findall(rf"event=cluster_reshard node={pair.name_b} added=(\d+)", since)[:1]
    assert int(added) == a_share  # all of A's targets went to B
    # loose again, A beats again and takes its share back
    await wait_until(
        lambda: (
            f"node={pair.name_b} before={pair.name_b} after={pair.name_a},{pair.name_b}"
            in pair.b_log()[seen:]
        ),
        20.0,
        "B to see A alive again",
    )


@pytest.mark.parametrize(
    ("dead_after", "bound"), [(2.0, 60.0), (10.0, 60.0), (20.0, 60.0), (30.0, 90.0)]
)
def test_a_loop_may_be_silent_for_a_minute_or_three_dead_afters_before_the_node_dies(
    dead_after: float, bound: float
) -> None:
    assert stuck_after(dead_after) == bound
