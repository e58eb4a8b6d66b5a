"""The status-change queue: a pile of changes is taken in as one batch, losing nothing,
out of order in nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting import Alerting, audit_key
from monitor.catalog import Catalog, load_catalog
from monitor.probe import Status
from tests.conftest import FakeClock

CUSTOMERS = 300
T0 = 1_795_000_000.0


def write_config(path: Path) -> Path:
    lines = [
        "incidents: {correlation: {enabled: false}, tick_interval: 1h}",
        "escalation_policies:",
        "  standard: {steps: [{after: 0s, notify: [outbox]}]}",
        "channels:",
        "  outbox: {type: file, directory: outbox}",
        "services:",
        "  exchange-online:",
        "    name: Exchange Online",
        "    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]",
        "customers:",
    ]
    lines += [
        f"  - {{id: c{i:03d}, name: Customer {i}, tenant_domain: c{i:03d}.partner.onmschina.cn,"
        " subscriptions: [exchange-online], escalation_policy: standard}"
        for i in range(CUSTOMERS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def alerting(
    tmp_path: Path,
) -> AsyncIterator[tuple[Alerting, Catalog, CollectorRegistry]]:
    catalog = load_catalog(write_config(tmp_path / "config.yaml"), env={})
    registry = CollectorRegistry()
    started = Alerting(registry, wall=FakeClock(T0))
    async with aiohttp.ClientSession() as http:
        await started.start(catalog, http, tmp_path, failing_checks=lambda c, s: [])
        try:
            yield started, catalog, registry
        finally:
            await started.close()


async def test_a_pile_of_changes_is_all_recorded_in_order(
    alerting: tuple[Alerting, Catalog, CollectorRegistry], tmp_path: Path
) -> None:
    queue, catalog, registry = alerting
    # start-up: every subscription goes from unknown to up at once, one goes down among them
    for i in range(CUSTOMERS):
        queue.subscription_changed(
            f"c{i:03d}", "exchange-online", Status.UNKNOWN, Status.UP, "", T0 + i / 1000
        )
        if i == 150:
            queue.subscription_changed(
                "c007", "exchange-online", Status.UP, Status.DOWN, "connection refused", T0 + 0.2
            )
    await queue.drain()

    store, manager = queue.store, queue.manager
    assert store is not None and manager is not None
    intervals = await store.status_intervals()
    assert len(intervals) == CUSTOMERS + 1
    assert [(i.status, i.start, i.end) for i in intervals if i.customer == "c007"] == [
        ("up", T0 + 0.007, T0 + 0.2),
        ("down", T0 + 0.2, None),
    ]
    [incident] = manager.open_incidents()
    assert (incident.customer, incident.status) == ("c007", "down")
    # the audit chain tells it in the order it happened: c007 down, then its incident
    entries = [(e.kind, e.subject, e.detail.get("status")) for e in await store.audit_entries()]
    down = entries.index(("status", "c007/exchange-online", "down"))
    opened = next(n for n, e in enumerate(entries) if e[0] == "incident" and e[1] == incident.id)
    assert down < opened
    assert (await store.verify_audit(audit_key(catalog, tmp_path)))[1] == []
    assert len([e for e in entries if e[0] == "status"]) == CUSTOMERS + 1
    # and the incident's events are counted for the dashboards
    count = registry.get_sample_value
    assert count("csp_monitor_incident_events_total", {"event": "opened"}) == 1.0
    assert count("csp_monitor_incident_events_total", {"event": "escalated"}) == 0.0


async def test_a_start_ups_first_statuses_are_written_in_a_few_transactions(
    alerting: tuple[Alerting, Catalog, CollectorRegistry], tmp_path: Path
) -> None:
    """25,000 subscriptions going from unknown to up at once (a start at scale) are taken
    in with a few large writes: each write costs round trips through the database's
    thread that a busy loop makes wait, so writing 2,000 at a time took 90 s at 50,000.
    Every change is in the history once."""
    queue, catalog, _ = alerting
    store = queue.store
    assert store is not None
    writes: list[int] = []
    record_statuses = store.record_statuses

    async def counted(changes: Sequence[tuple[str, str, str, float]]) -> int:
        writes.append(len(changes))
        return await record_statuses(changes)

    store.record_statuses = counted  # type: ignore[method-assign]
    first = 25_000
    for i in range(first):
        queue.subscription_changed(f"x{i:05d}", "web", Status.UNKNOWN, Status.UP, "", T0 + i)
    await queue.drain()

    assert sum(writes) == first and len(writes) <= 3, writes
    intervals = await store.status_intervals()
    assert sorted((i.customer, i.status, i.start, i.end) for i in intervals) == [
        (f"x{i:05d}", "up", T0 + i, None) for i in range(first)
    ]
    # the audit chain, written in several inserts, is whole and tells each change once
    assert (await store.verify_audit(audit_key(catalog, tmp_path)))[1] == []
    entries = await store.audit_entries(limit=100_000)
    statuses = [e.subject for e in entries if e.kind == "status"]
    assert sorted(statuses) == [f"x{i:05d}/web" for i in range(first)]
