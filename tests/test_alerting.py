"""Incidents end to end: a real daemon, a local service that breaks, a real SMTP server.

The on-call engineer's story: the service goes down, an e-mail arrives, the
incident escalates, the acknowledge link in the e-mail stops it, and when the
service is back everyone who was told hears so. Then the same across a
restart and with the SMTP server down for a while.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from monitor.daemon import Daemon
from monitor.store import OutboxStatus
from tests.conftest import (
    WebTarget,
    pg_admin,
    run_cli,
    run_elsewhere,
    start_smtp_server,
    stop_smtp_server,
    unused_port,
    wait_until,
)


@dataclass
class Mailbox:
    """What a real SMTP server (aiosmtpd) received."""

    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(message["Subject"]) for message in self.messages]

    def with_subject(self, prefix: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if str(m["Subject"]).startswith(prefix)]


@pytest.fixture
def smtp(free_port: int) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = start_smtp_server(mailbox, free_port)
    try:
        yield mailbox, free_port
    finally:
        stop_smtp_server(controller)


def write_config(
    path: Path,
    target_port: int,
    smtp_port: int,
    listen_port: int,
    *,
    store: str | None = None,
    customers: tuple[str, ...] = ("contoso",),
    correlation: str = "{enabled: false}",
    cooldown: str = "100ms",
    flapping: str = "{}",
) -> None:
    entries = "\n".join(
        f"  - {{id: {c}, name: {c.title()} (China) Ltd., tenant_domain: "
        f"{c}.partner.onmschina.cn, subscriptions: [exchange-online]}}"
        for c in customers
    )
    store_line = f"  store: {store}" if store else ""
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:{listen_port}
  public_url: http://127.0.0.1:{listen_port}
  shutdown_grace: 1s
{store_line}
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 1s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  cooldown: {cooldown}
  correlation: {correlation}
  flapping: {flapping}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [noc-email, outbox]}}
      - {{after: 1500ms, notify: [lead-outbox]}}
    repeat_interval: 1h
  vendor:
    steps:
      - {{after: 0s, notify: [vendor-outbox]}}
notifications:
  poll_interval: 100ms
  retry: {{initial: 200ms, max_delay: 1s}}
channels:
  noc-email: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn],
              timeout: 2}}
  outbox: {{type: file, directory: outbox}}
  lead-outbox: {{type: file, directory: lead}}
  vendor-outbox: {{type: file, directory: vendor}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{target_port}/healthz"}}
customers:
{entries}
""")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_setting(request: pytest.FixtureRequest) -> str | None:
    """The embedded SQLite store (None: the default), or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_database")
    run_elsewhere(
        pg_admin(url.rsplit("/", 1)[1], "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    )
    return url


@pytest.fixture
def config(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int], store_setting: str | None
) -> Path:
    path = tmp_path / "config.yaml"
    write_config(path, web_target.port, smtp[1], unused_port(), store=store_setting)
    return path


@pytest.fixture
async def daemon(config: Path) -> AsyncIterator[Daemon]:
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


def files(folder: Path) -> list[str]:
    # the file channel writes ".name.tmp" then renames it: only finished messages count
    finished = [p for p in folder.glob("*") if not p.name.startswith(".")]
    return sorted(p.read_text() for p in finished) if folder.exists() else []


def ack_link(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(r"http://127\.0\.0\.1:\d+/ack/\S+", body.get_content())
    assert match, "the e-mail has no acknowledge link"
    return match.group(0)


async def test_outage_pages_escalates_ack_link_stops_it_and_recovery_is_told(
    daemon: Daemon, web_target: WebTarget, smtp: tuple[Mailbox, int], config: Path
) -> None:
    mailbox, _ = smtp
    assert daemon.alerting.manager is not None
    await wait_until(
        lambda: daemon.board.subscriptions[("contoso", "exchange-online")].status.value == "up",
        what="up",
    )
    web_target.status = 503
    await wait_until(lambda: mailbox.with_subject("[DOWN"), what="the opened e-mail")
    [opened] = mailbox.messages
    text = opened.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for fact in ("Contoso (China) Ltd.", "Exchange Online", "status 503 (expected 200)", "INC-"):
        assert fact in text
    assert opened.get_body(("html",)) is not None
    assert len(files(config.parent / "outbox")) == 1
    # nobody acknowledged: the second step is paged
    await wait_until(
        lambda: len(files(config.parent / "lead")) == 1, within=10, what="escalation to the lead"
    )
    assert "ESCALATED" in files(config.parent / "lead")[0]
    # the on-call engineer opens the link: a confirmation page, then acknowledges
    link = ack_link(opened)
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as page:
            assert page.status == 200
            assert "Acknowledge" in await page.text()
        async with session.post(link, data={"by": "Li Wei"}) as done:
            assert done.status == 200, await done.text()
            assert "acknowledged by Li Wei" in await done.text()
        forged = link.replace("?t=", "?t=1") if "?t=" in link else link
        async with session.post(forged, data={"by": "x"}) as refused:
            assert refused.status == 403
    await wait_until(lambda: mailbox.with_subject("[ACK]"), what="the acknowledged e-mail")
    # service back: everyone who was paged hears it, once
    web_target.status = 200
    await wait_until(lambda: mailbox.with_subject("[RESOLVED]"), what="the resolved e-mail")
    await wait_until(
        lambda: any("RESOLVED" in f for f in files(config.parent / "lead")),
        what="resolved to the lead",
    )
    await asyncio.sleep(0.5)  # give a duplicate every chance to show up
    subjects = mailbox.subjects()
    assert [s.split("]")[0] + "]" for s in subjects] == ["[DOWN]", "[ACK]", "[RESOLVED]"], subjects
    incident_id = re.search(r"INC-\d{8}-\d{4}", subjects[0]).group(0)  # type: ignore[union-attr]
    incident, timeline = await daemon.alerting.manager.get(incident_id)
    kinds = [event.kind for event in timeline]
    assert kinds[:3] == ["opened", "paged", "escalated"]
    assert "acknowledged" in kinds and kinds[-1] == "resolved"
    assert incident.acknowledged_by == "Li Wei (link)"


async def test_smtp_down_then_back_loses_nothing_and_doubles_nothing(
    tmp_path: Path, web_target: WebTarget, free_port: int
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, web_target.port, free_port, unused_port())  # no SMTP server there yet
    daemon = Daemon(path)
    await daemon.start()
    mailbox = Mailbox()
    controller: Controller | None = None
    try:
        web_target.status = 503
        store = daemon.alerting.store
        assert store is not None

        async def retrying() -> bool:
            rows = await store.list_outbox()
            return any(r.channel == "noc-email" and r.attempts >= 2 for r in rows)

        await wait_until(retrying, what="e-mail retries while SMTP is down")
        controller = start_smtp_server(mailbox, free_port)
        await wait_until(lambda: len(mailbox.messages) == 1, within=10, what="delivery")
        await asyncio.sleep(1.5)  # several retry periods: no second copy
        assert len(mailbox.messages) == 1
        rows = [r for r in await store.list_outbox() if r.channel == "noc-email"]
        assert [r.status for r in rows] == [OutboxStatus.SENT]
    finally:
        await daemon.close()
        if controller is not None:
            stop_smtp_server(controller)


async def test_restart_mid_incident_resumes_escalation_without_a_second_page(
    config: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, _ = smtp
    first = Daemon(config)
    await first.start()
    try:
        web_target.status = 503
        await wait_until(lambda: mailbox.with_subject("[DOWN"), what="opened")
    finally:
        await first.close()
    assert files(config.parent / "lead") == []  # the daemon stopped before the second step
    second = Daemon(config)
    await second.start()
    try:
        await wait_until(
            lambda: len(files(config.parent / "lead")) == 1,
            within=10,
            what="escalation after the restart",
        )
        await asyncio.sleep(0.5)
        assert len(mailbox.with_subject("[DOWN")) == 1  # not paged again
        assert len(files(config.parent / "outbox")) == 1
    finally:
        await second.close()


async def test_one_service_down_for_many_customers_is_one_vendor_side_page(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, smtp_port = smtp
    path = tmp_path / "config.yaml"
    write_config(
        path,
        web_target.port,
        smtp_port,
        unused_port(),
        customers=("contoso", "fabrikam", "adatum"),
        correlation="{enabled: true, window: 1m, min_customers: 3, hold: 1s, "
        "escalation_policy: vendor}",
    )
    daemon = Daemon(path)
    await daemon.start()
    try:
        manager = daemon.alerting.manager
        assert manager is not None
        web_target.status = 503
        await wait_until(lambda: len(files(tmp_path / "vendor")) == 1, what="vendor-side page")
        [page] = files(tmp_path / "vendor")
        for customer in ("Contoso", "Fabrikam", "Adatum"):
            assert customer in page
        await asyncio.sleep(2)  # past the hold: the customers' own pages stay grouped
        assert files(tmp_path / "outbox") == [] and mailbox.messages == []
        grouped = [i for i in manager.open_incidents() if i.customer != "*"]
        assert len(grouped) == 3 and len({i.vendor_group for i in grouped}) == 1
        web_target.status = 200
        await wait_until(
            lambda: any("RESOLVED" in f for f in files(tmp_path / "vendor")),
            what="the vendor-side incident resolved",
        )
        assert manager.open_incidents() == []
    finally:
        await daemon.close()


async def test_maintenance_window_mutes_pages_and_is_recorded(
    daemon: Daemon, web_target: WebTarget, smtp: tuple[Mailbox, int], config: Path
) -> None:
    mailbox, _ = smtp
    base = f"http://127.0.0.1:{daemon.bound_port}"
    headers = {"Authorization": "Bearer noc-token"}
    await wait_until(
        lambda: daemon.board.subscriptions[("contoso", "exchange-online")].status.value == "up",
        what="up",
    )
    async with aiohttp.ClientSession() as session:
        window = {
            "starts_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "duration": "30d",
            "customer": "contoso",
            "reason": "Exchange migration",
        }
        async with session.post(f"{base}/api/v1/maintenance", json=window) as refused:
            assert refused.status == 401  # changing state needs a token
        async with session.post(
            f"{base}/api/v1/maintenance", json=window, headers=headers
        ) as created:
            assert created.status == 201, await created.text()
            window_id = (await created.json())["id"]
        web_target.status = 503
        manager = daemon.alerting.manager
        assert manager is not None
        await wait_until(lambda: manager.open_incidents(), what="an incident")
        await asyncio.sleep(0.5)
        [incident] = manager.open_incidents()
        assert incident.muted and mailbox.messages == []
        store = daemon.alerting.store
        assert store is not None
        intervals = await store.status_intervals(customer="contoso")
        assert intervals[-1].status == "maintenance"
        # the window is removed while the service is still down: paging starts
        async with session.delete(
            f"{base}/api/v1/maintenance/{window_id}", headers=headers
        ) as deleted:
            assert deleted.status == 200
    await wait_until(lambda: mailbox.with_subject("[DOWN"), what="page after maintenance")
    intervals = await store.status_intervals(customer="contoso")
    assert intervals[-1].status == "down"


async def test_cli_lists_and_acknowledges_incidents(
    daemon: Daemon, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    web_target.status = 503
    manager = daemon.alerting.manager
    assert manager is not None
    await wait_until(lambda: manager.open_incidents(), what="an incident")
    [incident] = manager.open_incidents()
    url = f"http://127.0.0.1:{daemon.bound_port}"

    async def cli(*args: str) -> tuple[int, str, str]:
        return await run_cli(*args, "--url", url, env={"CSP_MONITOR_TOKEN": "noc-token"})

    code, out, _ = await cli("incidents", "list")
    assert code == 0 and incident.id in out and "contoso/exchange-online" in out
    code, out, _ = await cli("incidents", "ack", incident.id)
    assert code == 0 and "acknowledged" in out
    code, out, _ = await cli("incidents", "vendor-case", incident.id, "2611230040001234")
    assert code == 0
    code, out, _ = await cli("incidents", "show", incident.id)
    assert "acknowledged by noc" in out and "vendor_case by noc: case=2611230040001234" in out
    code, _, err = await cli("incidents", "ack", incident.id)
    assert code == 1 and "nothing to acknowledge" in err
    # resolved by hand while still down, it would stay silent until it failed again
    code, _, err = await cli("incidents", "resolve", incident.id, "fixed, I think")
    assert code == 1 and "still down: acknowledge it instead" in err
    assert [i.id for i in manager.open_incidents()] == [incident.id]


async def test_kill_9_mid_incident_loses_no_escalation_and_sends_no_page_twice(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, smtp_port = smtp
    path = tmp_path / "config.yaml"
    write_config(path, web_target.port, smtp_port, unused_port())

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--config",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=dict(os.environ),
        )

    first = await start()
    try:
        web_target.status = 503
        await wait_until(lambda: mailbox.with_subject("[DOWN"), what="the first page")
        await asyncio.sleep(0.3)  # the delivery is recorded
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert files(tmp_path / "lead") == []  # killed before the second step was due
    second = await start()
    try:
        await wait_until(
            lambda: len(files(tmp_path / "lead")) == 1,
            within=15,
            what="the escalation that fell due while the daemon was dead",
        )
        await asyncio.sleep(1.0)
        assert len(mailbox.with_subject("[DOWN")) == 1  # the first page was not sent again
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 15) == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()


async def test_a_flapping_service_is_one_incident_not_a_storm_of_pages(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    """Down, up, down, up…: one incident, marked flapping, which resolves once the
    service has been stable, and a handful of messages instead of one per change."""
    mailbox, smtp_port = smtp
    path = tmp_path / "config.yaml"
    write_config(
        path,
        web_target.port,
        smtp_port,
        unused_port(),
        cooldown="3s",
        flapping="{window: 8s, high: 4, low: 1}",
    )
    daemon = Daemon(path)
    await daemon.start()
    try:
        key = ("contoso", "exchange-online")

        def status() -> str:
            return daemon.board.subscriptions[key].status.value

        await wait_until(lambda: status() == "up", what="up")
        changes = 0
        for _ in range(4):
            web_target.status = 503
            await wait_until(lambda: status() == "down", what="down")
            web_target.status = 200
            await wait_until(lambda: status() == "up", what="up again")
            changes += 2
        manager = daemon.alerting.manager
        assert manager is not None
        [incident] = await manager.list_incidents(state="all")
        _, timeline = await manager.get(incident.id)
        kinds = [event.kind for event in timeline]
        assert "flapping" in kinds
        assert incident.state.value != "resolved"  # still flapping: not resolved yet
        told = len(mailbox.messages)

        async def resolved() -> bool:
            return (await manager.list_incidents(state="all"))[0].state.value == "resolved"

        # stable for the flapping window: resolved, and told once more
        await wait_until(resolved, within=25.0, what="resolved once stable")
        await wait_until(lambda: len(mailbox.messages) > told, what="the resolved message")
        subjects = [str(m["Subject"]) for m in mailbox.messages]
        # 8 changes: paged when it went down, told when it came back before the flapping
        # showed, paged when it relapsed (the same incident, reopened), then silence
        # while it flapped, and one last message once it had been stable
        assert changes == 8 and len(subjects) == 4, subjects
        assert all(subject.endswith(incident.id) for subject in subjects)
        assert [subject.split("]")[0] for subject in subjects] == [
            "[DOWN",
            "[RESOLVED",
            "[DOWN",
            "[RESOLVED",
        ]
        [incident] = await manager.list_incidents(state="all")
        assert incident.flapping
    finally:
        await daemon.close()
