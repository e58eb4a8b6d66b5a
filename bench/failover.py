"""Failover: the leader killed (``kill -9``) between two escalation steps, ten times.

Three daemon processes share a fresh PostgreSQL database (on 127.0.0.1:5432)
and page a real SMTP server (aiosmtpd) in this process. In each trial one
customer's service starts failing; once its first page is delivered and
recorded, the leader is killed; the second step (to the lead, due
``--step-two`` seconds after the first page) must still go out. Then the
service recovers, both recipients get the resolution, and the killed node is
started again for the next trial.

Printed, per trial and summed: the time from the kill to the next page (and
how late it was against its due time), the new leader's takeover time, and
every message counted in the SMTP sink: lost (expected, never came) and
doubled (came twice). Goals: a new leader within ``dead_after`` + 5 s, the
next step on time, 0 lost, 0 doubled.

    python -m bench.failover                 # 10 trials
    python -m bench.failover --trials 3      # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiosmtpd.controller import Controller

from bench.common import free_port, print_table, verdict

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEAD_AFTER = 2.0
WAIT = 60.0  # the longest any one step may take before the trial counts it lost

CONFIG = """
monitor:
  store: {store}
  data_dir: ./data-${{CSP_BENCH_NODE}}
  audit_key: bench-audit-key
  link_key: bench-link-signing-key
  shutdown_grace: 1s
  cluster: {{node_id: "${{CSP_BENCH_NODE}}", heartbeat_interval: 0.3s, dead_after: {dead}s}}
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
              from_address: monitor@bench.example, to: [noc@bench.example], timeout: 2}}
  lead-email: {{type: email, host: 127.0.0.1, port: {smtp}, security: none,
               from_address: monitor@bench.example, to: [lead@bench.example], timeout: 2}}
services:
  portal:
    name: Portal
    checks: [{{name: web, type: http, url: "http://127.0.0.1:{port}/{{customer.id}}"}}]
customers:
{customers}
"""


@dataclass
class Sink:
    """aiosmtpd handler: (time received, recipient, subject) of every message."""

    received: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for recipient in envelope.rcpt_tos:
                # a folded header may come back with the fold's leading space
                subject = str(message["Subject"]).strip()
                self.received.append((time.time(), recipient.split("@")[0], subject))
        return "250 OK"

    def count(self, who: str, customer: str, resolved: bool) -> int:
        return len(self.times(who, customer, resolved))

    def times(self, who: str, customer: str, resolved: bool) -> list[float]:
        with self.lock:
            return [
                at
                for at, r, s in self.received
                if r == who
                and f"{customer.title()} " in s
                and s.startswith("[RESOLVED") == resolved
            ]


class Targets:
    """HTTP targets: 200 unless the customer is in ``failing``."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            failing = request.match_info["customer"] in self.failing
            return web.Response(status=503 if failing else 200)

        app = web.Application()
        app.router.add_get("/{customer}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Node:
    name: str
    port: int
    process: asyncio.subprocess.Process | None = None

    async def start(self, config: Path, log: Path) -> None:
        with log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitor.cli",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                stdout=out,
                stderr=out,
                env={**os.environ, "CSP_BENCH_NODE": self.name},
            )

    def cluster(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The node's ``/api/v1/cluster`` (None when it does not answer in ``timeout``)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/api/v1/cluster", timeout=timeout
            ) as answer:
                return dict(json.load(answer))
        except (OSError, ValueError):
            return None


async def stop_nodes(nodes: list[Node], grace: float) -> None:
    """SIGTERM to the nodes still running; killed if one has not gone after ``grace``."""
    for node in nodes:
        if node.process is not None and node.process.returncode is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process is not None:
            try:
                await asyncio.wait_for(node.process.wait(), grace)
            except TimeoutError:
                node.process.kill()


async def until(condition: Any, within: float) -> float | None:
    """Poll every 20 ms; the time it first held, or None after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        outcome = condition()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return time.time()
        await asyncio.sleep(0.02)
    return None


async def sent_to_noc(database: str, customer: str) -> bool:
    connection = await asyncpg.connect(database, timeout=10)
    try:
        return bool(
            await connection.fetchval(
                "SELECT count(*) FROM outbox o JOIN incidents i ON i.id = o.incident_id "
                "WHERE i.customer = $1 AND o.channel = 'noc-email' AND o.status = 'sent'",
                customer,
            )
        )
    finally:
        await connection.close()


def leader_of(nodes: list[Node]) -> tuple[str, int] | None:
    """(leader, epoch) when every node that answers agrees on an unexpired lease."""
    seen = set()
    for node in nodes:
        view = node.cluster()
        lease = view.get("leader") if view else None
        if not lease or lease["expired"]:
            return None
        seen.add((lease["node"], lease["epoch"]))
    return next(iter(seen)) if len(seen) == 1 else None


async def run(trials: int, step_two: float) -> int:
    database_name = f"csp_monitor_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=10)
    await admin.execute(f'CREATE DATABASE "{database_name}"')
    database = f"{PG_SERVER}/{database_name}"
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    targets = Targets()
    await targets.start()
    customers = [f"trial{i:02d}" for i in range(trials)]
    rows: list[list[str]] = []
    takeovers: list[float] = []
    next_page: list[float] = []
    late: list[float] = []
    lost = doubled = 0
    with tempfile.TemporaryDirectory(prefix="csp-failover-") as scratch:
        folder = Path(scratch)
        config = folder / "config.yaml"
        config.write_text(
            CONFIG.format(
                store=database,
                dead=DEAD_AFTER,
                step_two=step_two,
                smtp=smtp_port,
                port=targets.port,
                customers="\n".join(
                    f"  - {{id: {c}, name: {c.title()} Ltd, tenant_domain: {c}.example, "
                    "subscriptions: [portal]}"
                    for c in customers
                ),
            )
        )
        nodes = [Node(f"node-{letter}", free_port()) for letter in "abc"]
        try:
            for node in nodes:
                await node.start(config, folder / f"{node.name}.log")
            if await until(lambda: leader_of(nodes) is not None, 90) is None:
                raise SystemExit(
                    "the three nodes did not agree on a leader within 90 s\n" + _logs(folder)
                )
            for trial, customer in enumerate(customers, 1):
                targets.failing.add(customer)
                first = await until(lambda c=customer: sink.count("noc", c, False) >= 1, WAIT)
                await until(lambda c=customer: sent_to_noc(database, c), WAIT)
                held = leader_of(nodes)
                if first is None or held is None:
                    raise SystemExit(f"trial {trial}: no first page or no leader\n{_logs(folder)}")
                victim = next(n for n in nodes if n.name == held[0])
                assert victim.process is not None
                killed_at = time.time()
                victim.process.send_signal(signal.SIGKILL)
                await victim.process.wait()
                survivors = [n for n in nodes if n is not victim]
                took = await until(
                    lambda s=survivors, v=victim.name: (leader_of(s) or (v, 0))[0] != v, WAIT
                )
                paged = await until(lambda c=customer: sink.count("lead", c, False) >= 1, WAIT)
                targets.failing.discard(customer)
                for who in ("noc", "lead"):
                    await until(lambda w=who, c=customer: sink.count(w, c, True) >= 1, WAIT)
                await victim.start(config, folder / f"{victim.name}.log")
                await until(
                    lambda: all(
                        (v := n.cluster()) is not None
                        and sum(m["alive"] for m in v["members"]) == 3
                        for n in nodes
                    ),
                    90,
                )
                await asyncio.sleep(1.0)  # a second copy of anything would have come by now
                counts = {
                    (who, resolved): sink.count(who, customer, resolved)
                    for who in ("noc", "lead")
                    for resolved in (False, True)
                }
                lost += sum(1 for n in counts.values() if n == 0)
                doubled += sum(n - 1 for n in counts.values() if n > 1)
                due = first + step_two
                if took is not None:
                    takeovers.append(took - killed_at)
                if paged is not None:
                    page_at = min(sink.times("lead", customer, False))
                    next_page.append(page_at - killed_at)
                    late.append(max(0.0, page_at - due))
                rows.append(
                    [
                        str(trial),
                        victim.name,
                        f"{took - killed_at:.2f} s" if took else "none",
                        f"{next_page[-1]:.2f} s" if paged else "lost",
                        f"{late[-1]:.2f} s" if paged else "-",
                        " ".join(f"{n}" for n in counts.values()),
                    ]
                )
                print(
                    "trial {}: killed {}, new leader after {}, next page after {} (late {}), "
                    "messages noc/noc-resolved/lead/lead-resolved {}".format(*rows[-1]),
                    flush=True,
                )
        finally:
            await stop_nodes(nodes, 20)
            await targets.stop()
            controller.stop()
            await admin.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
            await admin.close()
    limit = DEAD_AFTER + 5.0
    print_table(
        f"Failover over {trials} trials (dead_after {DEAD_AFTER:g} s, step two {step_two:g} s)",
        [
            _row("new leader after the kill: median", takeovers, statistics.median, limit),
            _row("new leader after the kill: max", takeovers, max, limit),
            _row("next page after the kill: median", next_page, statistics.median, None),
            _row("next page after the kill: max", next_page, max, None),
            _row("next page later than due: max", late, max, 1.0),
            ["messages lost", str(lost), "0", verdict(lost, 0)],
            ["messages sent twice", str(doubled), "0", verdict(doubled, 0)],
        ],
    )
    return 0 if lost == 0 and doubled == 0 else 1


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted(folder.glob("*.log"))
    )


def _row(name: str, values: list[float], pick: Any, goal: float | None) -> list[str]:
    if not values:
        return [name, "none", f"≤ {goal:g} s" if goal else "-", "FAIL"]
    value = float(pick(values))
    return [
        name,
        f"{value:.2f} s",
        f"≤ {goal:g} s" if goal is not None else "(reported)",
        verdict(value, goal) if goal is not None else "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--step-two", type=float, default=6.0, help="seconds from the first page to the second"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.trials, args.step_two)))


if __name__ == "__main__":
    main()
