"""Vendor health joined to incidents: 21Vianet's own issue id reaches every message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from checks.vendor_common import VendorStatus
from monitor.catalog import Catalog, load_catalog
from monitor.incident_manager import IncidentManager
from monitor.probe import Status
from monitor.store import Store
from monitor.vendor import VendorBoard
from tests.conftest import FakeClock, started_manager

T0 = 1_800_000_000.0
MIN = 60.0
CONFIG = """
monitor: {public_url: "https://noc.example.cn/monitor"}
incidents: {default_policy: gold, correlation: {enabled: false}}
escalation_policies:
  gold:
    steps:
      - {after: 0m, notify: [noc-email, oncall-sms]}
      - {after: 15m, notify: [oncall-sms]}
      - {after: 60m, action: vendor_ticket, notify: [vendor-desk]}
channels:
  noc-email: {type: file, directory: mail}
  oncall-sms: {type: file, directory: sms}
  vendor-desk: {type: file, directory: desk}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}
"""
ISSUE = VendorStatus(
    service="exchange-online",
    source="m365",
    status="degraded",
    vendor_status="serviceDegradation",
    issue_id="EX226792",
    title="Some users can't access Outlook on the web",
    latest_post="We're reviewing service telemetry to isolate the cause.",
    classification="incident",
)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield store, catalog
    finally:
        await store.close()


async def test_incident_becomes_vendor_confirmed_and_says_so_everywhere(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    clock, board = FakeClock(T0), VendorBoard()
    manager = await started_manager(store, catalog, clock, board)
    await manager.status_changed(
        "contoso",
        "exchange-online",
        Status.UP,
        Status.DOWN,
        "status 503 (expected 200, 302)",
        clock.now,
    )
    [incident] = manager.open_incidents()
    first = await store.list_outbox()
    assert first and all("EX226792" not in m.message.text for m in first)
    # the Graph service-health check reports the same problem a minute later
    clock.now += MIN
    [change] = board.update("contoso", [ISSUE])
    await manager.vendor_changed(change, clock.now)
    [incident] = manager.open_incidents()
    assert incident.vendor_issue == "EX226792"
    _, timeline = await manager.get(incident.id)
    assert timeline[-1].kind == "vendor_confirmed"
    assert timeline[-1].detail["title"] == ISSUE.title
    # the next pages carry it: the escalation SMS, then the ticket draft for 21Vianet
    for minute in (15, 60):
        clock.now = T0 + minute * MIN
        await manager.tick(clock.now)
    rows = {row.message.dedup_key: row.message for row in await store.list_outbox()}
    sms = rows[f"{incident.id}:step:1:oncall-sms"]
    assert "21V:EX226792" in sms.sms
    ticket = rows[f"{incident.id}:step:2:vendor-desk"]
    assert ticket.event == "vendor_ticket"
    assert "EX226792" in ticket.text and ISSUE.title in ticket.text
    assert "EX226792" in (ticket.html or "")
    # a resolved e-mail also names it
    clock.now += MIN
    await manager.status_changed(
        "contoso", "exchange-online", Status.DOWN, Status.UP, "", clock.now
    )
    rows = {row.message.dedup_key: row.message for row in await store.list_outbox()}
    resolved = next(
        m
        for k, m in rows.items()
        if k.startswith(f"{incident.id}:resolved") and m.channel == "noc-email"
    )
    assert "EX226792" in resolved.text


async def test_vendor_issue_while_our_probes_are_fine_is_an_advisory(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    clock, board = FakeClock(T0), VendorBoard()
    audited = await Store.open(store.url.replace("sqlite+aiosqlite", "sqlite"), audit_key=b"a" * 32)
    try:
        manager = await started_manager(audited, catalog, clock, board)
        [change] = board.update("contoso", [ISSUE])
        await manager.vendor_changed(change, clock.now)
        assert manager.open_incidents() == []
        advisories = [e for e in await audited.audit_entries() if e.kind == "vendor_advisory"]
        assert [(a.subject, a.detail["issue_id"]) for a in advisories] == [
            ("contoso/exchange-online", "EX226792")
        ]
        # if our probes then see it too, the new incident is confirmed from the start
        await manager.status_changed(
            "contoso", "exchange-online", Status.UP, Status.DEGRADED, "slow: 4s > 2s", clock.now
        )
        [incident] = manager.open_incidents()
        assert incident.vendor_issue == "EX226792"
    finally:
        await audited.close()


async def test_advisories_are_paged_and_planned_maintenance_mutes_when_configured(
    setup: tuple[Store, Catalog],
) -> None:
    import dataclasses

    store, catalog = setup
    clock, board = FakeClock(T0), VendorBoard()
    manager = await started_manager(store, catalog, clock, board)
    [change] = board.update("contoso", [ISSUE])
    await manager.vendor_changed(change, clock.now, notify_advisory=True)
    advisories = [r.message for r in await store.list_outbox()]
    assert {m.channel for m in advisories} == {"noc-email", "oncall-sms"}
    assert all(
        m.subject.startswith("[VENDOR ADVISORY] Contoso (China) Ltd.") and "EX226792" in m.subject
        for m in advisories
    )
    planned = dataclasses.replace(
        ISSUE,
        status="up",
        issue_id="MO123456",
        classification="maintenance",
        planned_maintenance=True,
        start=T0 + 3600,
        title="Exchange Online upgrade",
    )
    [change] = board.update("contoso", [planned])
    await manager.vendor_changed(change, clock.now, feed_maintenance=True)
    [window] = await manager.list_maintenance()
    assert (window.id, window.customer, window.service) == (
        "VM-MO123456-contoso-exchange-online",
        "contoso",
        "exchange-online",
    )
    assert (window.starts_at, window.ends_at) == (T0 + 3600, T0 + 3600 + 4 * 3600)
    assert window.reason.endswith("(no end announced: 4 h assumed)")
    # the same announcement again adds nothing
    await manager.vendor_changed(change, clock.now, feed_maintenance=True)
    assert len(await manager.list_maintenance()) == 1
    # a feed that gives the times: the window is the one announced
    announced = dataclasses.replace(
        planned,
        service="azure-portal",
        issue_id="4K2M-9PQ",
        maintenance_start=T0 + 7200,
        maintenance_end=T0 + 7200 + 5400,
    )
    [change] = board.update("contoso", [announced])
    await manager.vendor_changed(change, clock.now, feed_maintenance=True)
    portal = next(w for w in await manager.list_maintenance() if w.service == "azure-portal")
    assert (portal.starts_at, portal.ends_at) == (T0 + 7200, T0 + 7200 + 5400)
    assert portal.reason == "21Vianet planned maintenance: Exchange Online upgrade"


GROWING = """
incidents:
  default_policy: gold
  correlation: {enabled: true, window: 10m, min_customers: 3, hold: 1m,
                update_when: {factor: 2, added: 10, min_interval: 5m}}
escalation_policies:
  gold:
    steps: [{after: 0m, notify: [noc-email]}]
channels:
  noc-email: {type: file, directory: mail}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
"""


async def test_a_growing_vendor_side_outage_tells_its_true_size(tmp_path: Path) -> None:
    ids = [f"c{n:02d}" for n in range(1, 21)]
    (tmp_path / "config.yaml").write_text(
        GROWING
        + "".join(
            f"  - {{id: {c}, name: Customer {c[1:]} Ltd., tenant_domain: {c}.partner.onmschina.cn,"
            " subscriptions: [exchange-online]}\n"
            for c in ids
        )
    )
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        clock = FakeClock(T0)
        manager = await started_manager(store, catalog, clock, VendorBoard())

        async def fails(customer: str, at: float) -> None:
            clock.now = at
            await manager.status_changed(
                customer, "exchange-online", Status.UP, Status.DOWN, "status 503", at
            )
            await manager.tick(at)

        for n, customer in enumerate(ids[:3]):
            await fails(customer, T0 + n)
        [group] = [i for i in manager.open_incidents() if i.customer == "*"]
        assert group.reason == (
            "3 customers affected: Customer 01 Ltd., Customer 02 Ltd., Customer 03 Ltd."
        )
        # grouped when the third customer failed; the outage began with the first's
        assert group.opened_at == T0
        # Exchange fails for the other 17 over the next three minutes
        for n, customer in enumerate(ids[3:]):
            await fails(customer, T0 + MIN + n * 10)
        [group] = [i for i in manager.open_incidents() if i.customer == "*"]
        assert group.reason.startswith("20 customers affected: Customer 01 Ltd., ")
        _, timeline = await manager.get(group.id)
        assert [e.detail["customers"] for e in timeline if e.kind == "blast_radius"] == list(
            range(3, 21)
        )
        events = [row.message.event for row in await store.list_outbox()]
        assert events == ["opened"]  # no update within five minutes of the page
        for minute in (5, 6, 7, 20):
            clock.now = T0 + minute * MIN
            await manager.tick(clock.now)
        rows = [row.message for row in await store.list_outbox()]
        assert [m.event for m in rows] == ["opened", "updated"]
        update = rows[1]
        assert "now 20 customers affected (was 3)" in update.subject
        assert "Customer 20 Ltd." in update.text
        # everyone recovers at +30 min: the resolution gives the final count and durations
        for customer in ids:
            clock.now = T0 + 30 * MIN
            await manager.status_changed(
                customer, "exchange-online", Status.DOWN, Status.UP, "", clock.now
            )
        await manager.tick(clock.now)
        assert manager.open_incidents() == []
        resolved = [
            m for m in (r.message for r in await store.list_outbox()) if m.event == "resolved"
        ]
        [text] = [m.text for m in resolved if m.incident_id == group.id]
        assert "was failing for 20 customers" in text
        assert "Customer 01 Ltd.: 30 min" in text
        assert "Customer 20 Ltd.: 26 min 20 s" in text
    finally:
        await store.close()


async def test_customers_seen_down_from_one_location_only_are_their_own_group(
    tmp_path: Path,
) -> None:
    """Three customers degraded because bj-unicom alone sees Exchange down, three down
    everywhere: two vendor-side incidents, each with its customers; a restart keeps them
    apart and a fourth bj-unicom-only customer joins its own."""
    ids = ["c01", "c02", "c03", "c04", "c05", "c06", "c07"]
    (tmp_path / "config.yaml").write_text(
        GROWING
        + "".join(
            f"  - {{id: {c}, name: Customer {c[1:]} Ltd., tenant_domain: {c}.partner.onmschina.cn,"
            " subscriptions: [exchange-online]}\n"
            for c in ids
        )
    )
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    bj, everywhere = ("bj-unicom",), ("bj-unicom", "gz-mobile", "sh-telecom")
    try:
        clock = FakeClock(T0)
        manager = await started_manager(store, catalog, clock, VendorBoard())

        async def fails(manager: IncidentManager, customer: str, path: bool) -> None:
            clock.now += 5
            await manager.status_changed(
                customer,
                "exchange-online",
                Status.UP,
                Status.DEGRADED if path else Status.DOWN,
                "down from bj-unicom (timed out), up from sh-telecom, gz-mobile" if path else "503",
                clock.now,
                down_from=bj if path else everywhere,
            )
            await manager.tick(clock.now)

        for customer in ids[:3]:
            await fails(manager, customer, path=True)
        for customer in ids[3:6]:
            await fails(manager, customer, path=False)

        def groups(manager: IncidentManager) -> dict[tuple[str, ...], list[str]]:
            found = {i.id: i for i in manager.open_incidents() if i.customer == "*"}
            return {
                group.down_from: sorted(
                    i.customer for i in manager.open_incidents() if i.vendor_group == group.id
                )
                for group in found.values()
            }

        assert groups(manager) == {(): ["c04", "c05", "c06"], bj: ["c01", "c02", "c03"]}
        [from_bj] = [i for i in manager.open_incidents() if i.down_from == bj and i.customer == "*"]
        assert from_bj.status is Status.DEGRADED
        assert from_bj.reason == (
            "3 customers affected from bj-unicom only: "
            "Customer 01 Ltd., Customer 02 Ltd., Customer 03 Ltd."
        )
        # after a restart the store tells them apart, and the group keeps growing
        again = await started_manager(store, catalog, clock, VendorBoard())
        assert groups(again) == groups(manager)
        await fails(again, ids[6], path=True)
        assert groups(again)[bj] == ["c01", "c02", "c03", "c07"]
        [from_bj] = [i for i in again.open_incidents() if i.down_from == bj and i.customer == "*"]
        assert from_bj.reason.startswith("4 customers affected from bj-unicom only: ")
        pages = [row.message for row in await store.list_outbox() if row.message.incident_id]
        [bj_page] = [m for m in pages if m.incident_id == from_bj.id and m.event == "opened"]
        assert "customers (vendor-side, from bj-unicom only)" in bj_page.subject
    finally:
        await store.close()
