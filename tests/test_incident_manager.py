"""The incident manager with a real SQLite store: what on-call and auditors see.

Lost status changes still open incidents, a manual resolve cannot silence a
failing service, step recipients are paged, and an outage's history, "since"
and duration start with its first failed probe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.catalog import Catalog, load_catalog
from monitor.engine import incidents as engine
from monitor.engine.model import IncidentConflict, IncidentState
from monitor.probe import Status
from monitor.store import Store, StoreError
from tests.conftest import FakeClock, started_manager

T0 = 1_800_000_000.0
MIN = 60.0
KEY = ("contoso", "exchange-online")
CONFIG = """
monitor: {public_url: "https://noc.example.cn/monitor"}
incidents: {default_policy: gold, correlation: {enabled: false}, cooldown: 10m}
escalation_policies:
  gold:
    steps:
      - {after: 0m, notify: [noc-email]}
      - {after: 15m, notify: [noc-email], recipients: [lead@reseller.example.cn]}
channels:
  noc-email: {type: email, host: 127.0.0.1, port: 25, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn]}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}
"""


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield store, catalog
    finally:
        await store.close()


async def test_a_status_change_lost_to_a_store_error_opens_its_incident_at_the_next_tick(
    setup: tuple[Store, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)

    def store_down() -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(store, "transaction", store_down)
    with pytest.raises(StoreError):
        await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    monkeypatch.undo()
    assert manager.open_incidents() == []
    clock.now += 10
    await manager.tick(clock.now)
    [incident] = manager.open_incidents()
    assert (incident.status, incident.reason) == ("down", "connection refused")
    [page] = await store.list_outbox()
    assert page.message.event == "opened" and incident.id in page.message.subject
    # and only one: the next tick finds it open
    await manager.tick(clock.now + 10)
    assert len(manager.open_incidents()) == 1 and len(await store.list_outbox()) == 1


async def test_a_failing_service_cannot_be_resolved_by_hand_only_acknowledged(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    [incident] = manager.open_incidents()
    with pytest.raises(IncidentConflict, match="still down: acknowledge it instead"):
        await manager.resolve(incident.id, "li.wei", "rebooted", T0 + MIN)
    acknowledged = await manager.acknowledge(incident.id, "li.wei", T0 + MIN)
    assert acknowledged.state is IncidentState.ACKNOWLEDGED
    # up again: it resolves by itself; once recovered, an operator may close one too
    await manager.status_changed(*KEY, Status.DOWN, Status.UP, "", T0 + 5 * MIN)
    assert manager.open_incidents() == []
    with pytest.raises(IncidentConflict, match="already resolved"):
        await manager.resolve(incident.id, "li.wei", "", T0 + 6 * MIN)


async def test_a_step_pages_its_own_recipients(setup: tuple[Store, Catalog]) -> None:
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    clock.now = T0 + 15 * MIN
    await manager.tick(clock.now)
    sent = [(row.message.event, row.message.recipients) for row in await store.list_outbox()]
    assert sent == [
        ("opened", ("noc@reseller.example.cn",)),
        ("escalated", ("lead@reseller.example.cn",)),
    ]


async def test_everyone_a_step_reached_hears_the_resolution(setup: tuple[Store, Catalog]) -> None:
    """The first step pages the channel's own list, the second a named lead: both are
    told it is over, not only the last step's recipients."""
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    clock.now = T0 + 15 * MIN
    await manager.tick(clock.now)
    clock.now = T0 + 20 * MIN
    await manager.status_changed(*KEY, Status.DOWN, Status.UP, "", clock.now)
    resolved = [
        row.message.recipients
        for row in await store.list_outbox()
        if row.message.event == "resolved"
    ]
    assert sorted(resolved) == [("lead@reseller.example.cn",), ("noc@reseller.example.cn",)]


async def test_an_outage_is_recorded_and_told_from_its_first_failed_probe(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(*KEY, Status.UNKNOWN, Status.UP, "", T0)
    # the first failed probe at +10 min, confirmed by the third 20 s later
    clock.now = T0 + 10 * MIN + 20
    await manager.status_changed(
        *KEY, Status.UP, Status.DOWN, "connection refused", clock.now, since=T0 + 10 * MIN
    )
    [incident] = manager.open_incidents()
    assert incident.opened_at == T0 + 10 * MIN
    [opened] = await store.list_outbox()
    assert "for 20 s" in opened.message.text
    # the first good probe at +12 min 55 s, confirmed by the second 10 s later
    clock.now = T0 + 13 * MIN + 5
    await manager.status_changed(
        *KEY, Status.DOWN, Status.UP, "", clock.now, since=T0 + 12 * MIN + 55
    )
    intervals = [(i.status, i.start, i.end) for i in await store.status_intervals(*KEY)]
    assert intervals == [
        ("up", T0, T0 + 10 * MIN),
        ("down", T0 + 10 * MIN, T0 + 12 * MIN + 55),
        ("up", T0 + 12 * MIN + 55, None),
    ]
    resolved = [row.message for row in await store.list_outbox() if row.message.event == "resolved"]
    assert resolved and "after 2 min 55 s" in resolved[0].text


async def test_an_incident_of_a_subscription_no_longer_monitored_can_be_resolved(
    setup: tuple[Store, Catalog], tmp_path: Path
) -> None:
    store, catalog = setup
    clock = FakeClock(T0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    [incident] = manager.open_incidents()
    (tmp_path / "reloaded.yaml").write_text(
        CONFIG.replace("subscriptions: [exchange-online]", "subscriptions: []")
    )
    manager.configure(load_catalog(tmp_path / "reloaded.yaml", env={}))
    await manager.tick(T0 + MIN)
    resolved = await manager.resolve(incident.id, "li.wei", "customer left", T0 + MIN)
    assert resolved.state is IncidentState.RESOLVED
    await manager.tick(T0 + 2 * MIN)
    assert manager.open_incidents() == []  # and nothing reopens it


async def test_an_incident_write_outside_the_managers_lock_is_refused(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    manager = await started_manager(store, catalog, FakeClock(T0))
    await manager.status_changed(*KEY, Status.UP, Status.DOWN, "connection refused", T0)
    [incident] = manager.open_incidents()
    with pytest.raises(RuntimeError, match="under the incident manager's lock"):
        await manager._apply(incident, lambda i: engine.add_note(i, "x", "li.wei", T0 + MIN))
    _, timeline = await manager.get(incident.id)
    assert "note" not in [event.kind for event in timeline]
