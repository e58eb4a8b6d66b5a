"""Only the leader pages, and losing it loses no page and sends none twice.

Three real daemon processes on the real PostgreSQL page a real SMTP server
(aiosmtpd). Every node probes its share; the leader alone runs escalation and
the notifier. The leader is killed (``kill -9``) between two escalation steps,
or cut off from PostgreSQL (``pg_terminate_backend`` of its connections,
again and again); the next step must still go out, once.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import start_smtp_server, stop_smtp_server, unused_port, wait_until
from tests.prometheus_stack import CLUSTER_RULES, start_prometheus
from tests.test_cluster_nodes import (
    START_WITHIN,
    Node,
    ProbeLog,
    cluster_view,
    get_json,
    kill_9,
    start_node,
    stop_nodes,
)

CUSTOMERS = [f"cust{i}" for i in range(4)]
WAIT = 45.0  # bounded waits, generous for a busy 2-core machine; never a measure of speed
STEP_TWO_AFTER = 4.0  # seconds between the first page and the escalation to the lead

CONFIG = """
monitor:
  store: "postgresql://${{CSP_TEST_DB_USER}}@127.0.0.1:5432/{database}"
  data_dir: ./data-${{CSP_TEST_NODE}}
  audit_key: failover-audit-key
  link_key: failover-link-key
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
  cluster: {{node_id: "${{CSP_TEST_NODE}}", heartbeat_interval: 0.3s, dead_after: 2s}}
defaults: {{interval: 500ms, retry_interval: 200ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 200ms
  cooldown: 100ms
  correlation: {{enabled: false}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [noc-email]}}
      - {{after: {step_two}s, notify: [lead-email]}}
    repeat_interval: 1h
notifications:
  poll_interval: 100ms
  retry: {{initial: 200ms, max_delay: 1s}}
channels:
  noc-email: {{type: email, host: 127.0.0.1, port: {smtp}, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn],
              timeout: 2}}
  lead-email: {{type: email, host: 127.0.0.1, port: {smtp}, security: none,
               from_address: monitor@reseller.example.cn, to: [lead@reseller.example.cn],
               timeout: 2}}
services:
  portal:
    name: Portal
    checks:
      - name: web
        type: http
        url: "http://127.0.0.1:{port}/{{customer.id}}"
customers:
{customers}
"""


@dataclass
class Mailbox:
    """What the SMTP server received: (recipient, subject) of every message."""

    received: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed: EmailMessage = email.message_from_bytes(  # type: ignore[assignment]
            envelope.content, policy=email.policy.default
        )
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.received.append((recipient.split("@")[0], str(parsed["Subject"]).strip()))
        return "250 OK"

    def pages(self, who: str, customer: str) -> list[str]:
        """Subjects of the messages ``who`` got about ``customer``."""
        with self.lock:
            return [s for r, s in self.received if r == who and f"{customer.title()} " in s]

    def count(self, who: str, customer: str, kind: str) -> int:
        return sum(1 for subject in self.pages(who, customer) if _kind(subject) == kind)


def _kind(subject: str) -> str:
    return "resolved" if subject.startswith("[RESOLVED") else "problem"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = unused_port()
    controller = start_smtp_server(box, port)
    try:
        yield box, port
    finally:
        stop_smtp_server(controller)


@pytest.fixture
async def probe_log() -> AsyncIterator[ProbeLog]:
    server = ProbeLog()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Cluster:
    nodes: list[Node]
    config: Path
    database: str
    session: aiohttp.ClientSession
    roles: dict[str, str]  # node → its own PostgreSQL role, so one node can be cut off

    async def leader(self) -> Node:
        """The node every live node agrees leads, once they do."""
        found: list[Node] = []

        async def agreed() -> bool:
            names = set()
            for node in self.live():
                view = await cluster_view(self.session, node)
                lease = view.get("leader") if view else None
                if not lease or lease["expired"]:
                    return False
                names.add(lease["node"])
            found[:] = [n for n in self.nodes if n.name in names]
            return len(found) == 1 and not found[0].killed

        await wait_until(agreed, WAIT, "one leader all live nodes agree on")
        return found[0]

    def live(self) -> list[Node]:
        return [n for n in self.nodes if not n.killed]

    async def start(self, node: Node) -> None:
        node.killed = False
        await start_node(node, self.config, {"CSP_TEST_DB_USER": self.roles[node.name]})

    async def all_alive(self) -> None:
        async def three() -> bool:
            for node in self.nodes:
                view = await cluster_view(self.session, node)
                if view is None or sum(m["alive"] for m in view["members"]) != len(self.nodes):
                    return False
            return True

        try:
            await wait_until(three, START_WITHIN, "every node alive and seen by the others")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def logs(self) -> str:
        return "\n".join(n.log_tail(25) for n in self.nodes)

    async def incident_of(self, node: Node, customer: str) -> dict[str, Any]:
        found = await get_json(self.session, f"{node.url}/api/v1/incidents?customer={customer}")
        [incident] = found["incidents"]
        return dict(incident)

    async def sent_to_noc(self, customer: str) -> int:
        """How many pages to the NOC about ``customer`` were delivered and recorded as
        sent (the module's tests share the database: compare with the count before)."""
        connection = await asyncpg.connect(self.database, timeout=10)
        try:
            row = await connection.fetchval(
                "SELECT count(*) FROM outbox o JOIN incidents i ON i.id = o.incident_id "
                "WHERE i.customer = $1 AND o.channel = 'noc-email' AND o.status = 'sent'",
                customer,
            )
        finally:
            await connection.close()
        return int(row)


@pytest.fixture
async def cluster(
    tmp_path: Path,
    pg_database: str,
    probe_log: ProbeLog,
    mailbox: tuple[Mailbox, int],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Cluster]:
    config = tmp_path / "config.yaml"
    customers = "\n".join(
        f"  - {{id: {c}, name: {c.title()} Ltd, tenant_domain: {c}.example, "
        "subscriptions: [portal]}"
        for c in CUSTOMERS
    )
    config.write_text(
        CONFIG.format(
            database=pg_database.rsplit("/", 1)[1],
            port=probe_log.port,
            smtp=mailbox[1],
            step_two=STEP_TWO_AFTER,
            customers=customers,
        )
    )
    prefix = request.node.name.split("_")[1]
    nodes = [
        Node(f"{prefix}-{letter}", unused_port(), tmp_path / f"{letter}.log") for letter in "abc"
    ]
    # roles are shared by every database of the server: named for this test's database
    roles = {node.name: f"{pg_database.rsplit('/', 1)[1]}_{node.name[-1]}" for node in nodes}
    await _admin(pg_database, *(f'CREATE ROLE "{role}" LOGIN SUPERUSER' for role in roles.values()))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        found = Cluster(nodes, config, pg_database, session, roles)
        try:
            for node in nodes:
                await found.start(node)
            await found.all_alive()
            yield found
        finally:
            await stop_nodes(nodes)
            await _admin(
                pg_database,
                *(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{r}'"
                    for r in roles.values()
                ),
                *(f'REASSIGN OWNED BY "{role}" TO postgres' for role in roles.values()),
                *(f'DROP ROLE IF EXISTS "{role}"' for role in roles.values()),
            )


async def _admin(database: str, *statements: str) -> None:
    connection = await asyncpg.connect(database, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _first_page(cluster: Cluster, box: Mailbox, probe_log: ProbeLog, customer: str) -> None:
    sent_before = await cluster.sent_to_noc(customer)
    probe_log.failing.add(customer)

    async def recorded() -> bool:
        return await cluster.sent_to_noc(customer) > sent_before

    try:
        await wait_until(lambda: box.count("noc", customer, "problem") == 1, WAIT, "first page")
        await wait_until(recorded, WAIT, "the page recorded as sent")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None


async def test_killing_the_leader_between_steps_loses_no_page_and_sends_none_twice(
    cluster: Cluster, probe_log: ProbeLog, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    for customer in CUSTOMERS[:3]:  # bench/failover.py repeats it ten times
        await _first_page(cluster, box, probe_log, customer)
        leader = await cluster.leader()
        kill_9(leader)
        try:
            await wait_until(
                lambda c=customer: box.count("lead", c, "problem") == 1,  # type: ignore[misc]
                WAIT,
                f"the escalation of {customer} after the leader {leader.name} was killed",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster.logs()}") from None
        successor = await cluster.leader()
        assert successor is not leader
        probe_log.failing.discard(customer)
        for who in ("noc", "lead"):
            await wait_until(
                lambda w=who, c=customer: box.count(w, c, "resolved") == 1,  # type: ignore[misc]
                WAIT,
                f"the resolution of {customer} to {who}",
            )
        await cluster.start(leader)
        await cluster.all_alive()
    await asyncio.sleep(2.0)  # anything sent twice would have arrived by now
    for customer in CUSTOMERS[:3]:
        assert {
            (who, kind): box.count(who, customer, kind)
            for who in ("noc", "lead")
            for kind in ("problem", "resolved")
        } == {
            ("noc", "problem"): 1,
            ("noc", "resolved"): 1,
            ("lead", "problem"): 1,
            ("lead", "resolved"): 1,
        }, box.pages("noc", customer) + box.pages("lead", customer)


async def test_an_ack_sent_to_a_follower_stops_the_escalation(
    cluster: Cluster, probe_log: ProbeLog, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    customer = CUSTOMERS[0]
    await _first_page(cluster, box, probe_log, customer)
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    incident = await cluster.incident_of(follower, customer)  # a follower answers reads too
    url = f"{follower.url}/api/v1/incidents/{incident['id']}/ack"
    async with cluster.session.post(url) as refused:
        assert refused.status == 401  # the leader checks the token, as for its own
    headers = {"Authorization": "Bearer noc-token"}
    async with cluster.session.post(url, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["state"] == "acknowledged"
    # the second step was due STEP_TWO_AFTER after the first page: wait past it
    await asyncio.sleep(STEP_TWO_AFTER + 2.0)
    assert box.count("lead", customer, "problem") == 0
    shown = await cluster.incident_of(leader, customer)
    assert (shown["state"], shown["acknowledged_by"]) == ("acknowledged", "noc")


async def test_a_leader_cut_off_from_postgresql_stops_before_another_leads(
    cluster: Cluster, probe_log: ProbeLog, mailbox: tuple[Mailbox, int], pg_database: str
) -> None:
    box, _ = mailbox
    customer = CUSTOMERS[1]
    await _first_page(cluster, box, probe_log, customer)
    leader = await cluster.leader()
    role = cluster.roles[leader.name]
    # its connections end and it cannot open new ones: it cannot renew its lease
    await _admin(
        pg_database,
        f'ALTER ROLE "{role}" NOLOGIN',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
    )
    leader.killed = True  # out of reach: the others decide alone
    try:
        successor = await cluster.leader()
        assert successor is not leader
        await wait_until(
            lambda: box.count("lead", customer, "problem") == 1, WAIT, "the escalation"
        )
    finally:
        await _admin(pg_database, f'ALTER ROLE "{role}" LOGIN')
        leader.killed = False
    probe_log.failing.discard(customer)
    for who in ("noc", "lead"):
        await wait_until(
            lambda w=who: box.count(w, customer, "resolved") == 1,  # type: ignore[misc]
            WAIT,
            f"the resolution to {who}",
        )
    await cluster.all_alive()  # the cut-off node is back as a follower
    await asyncio.sleep(2.0)  # anything sent twice would have arrived by now
    assert [box.count(who, customer, "problem") for who in ("noc", "lead")] == [1, 1]
    assert [box.count(who, customer, "resolved") for who in ("noc", "lead")] == [1, 1]
    # never two leaders at once: by the logs (one clock, this machine's), the successor
    # began its duties after the cut-off leader had stopped its own
    [stopped, *_] = _times(leader.log_path, "event=leader_duties_stopped")
    [began] = _times(successor.log_path, "event=leader_duties_started")[-1:]
    assert stopped < began, (stopped, began)


async def test_the_cluster_rules_see_one_leader_and_report_a_killed_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Prometheus scraping the three nodes with the shipped cluster rules."""
    prometheus = start_prometheus(
        _fresh(tmp_path / "prometheus"),
        [f"127.0.0.1:{n.port}" for n in cluster.nodes],
        rule_files=[CLUSTER_RULES],
    )
    try:

        def value(expr: str) -> list[Any]:
            result, error = prometheus.query(expr)
            assert error is None, error
            return result

        await wait_until(
            lambda: [float(r["value"][1]) for r in value(_LEADERS)] == [1.0],
            WAIT,
            "one leader counted over the nodes",
        )
        await wait_until(
            lambda: len(value("csp_monitor_cluster_member_up")) == 9, WAIT, "3 views of 3"
        )
        leader = await cluster.leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        kill_9(follower)

        def alerts(name: str) -> list[dict[str, Any]]:
            answer = prometheus.get("/api/v1/alerts")
            return [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == name]

        # pending for its minute: the rule has seen the node dead, and only that one
        await wait_until(lambda: alerts("CspMonitorNodeDead"), WAIT, "the dead node seen")
        assert [a["labels"]["node"] for a in alerts("CspMonitorNodeDead")] == [follower.name]
        assert alerts("CspMonitorNoLeader") == []
        assert [float(r["value"][1]) for r in value(_LEADERS)] == [1.0]
    finally:
        prometheus.stop()


_LEADERS = 'sum(csp_monitor_cluster_leader{job="csp-monitor"})'


def _times(path: Path, event: str) -> list[str]:
    text = path.read_text(errors="replace")
    return [m.group(1) for m in re.finditer(rf"ts=(\S+) .*{re.escape(event)}", text)]


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder
