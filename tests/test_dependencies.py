"""Service dependencies: sign-in down takes Exchange with it, and only sign-in pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.catalog import Catalog, load_catalog
from monitor.incident_manager import IncidentManager
from monitor.links import LinkSigner
from monitor.notify.templates import TemplateRenderer
from monitor.probe import Status
from monitor.store import Store
from tests.conftest import FakeClock

T0 = 1_800_000_000.0
MIN = 60.0
CONFIG = """
incidents: {default_policy: standard, correlation: {enabled: false}, cooldown: 1s}
escalation_policies:
  standard:
    steps:
      - {after: 0m, notify: [noc]}
      - {after: 15m, notify: [lead]}
channels:
  noc: {type: file, directory: noc}
  lead: {type: file, directory: lead}
services:
  entra-signin:
    name: Entra ID sign-in (operated by 21Vianet)
    checks: [{name: token, type: tcp, host: 127.0.0.1, port: 1}]
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    depends_on: [entra-signin]
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [entra-signin, exchange-online]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     subscriptions: [entra-signin, exchange-online]}
"""


@pytest.fixture
async def manager(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[IncidentManager, Store, FakeClock]]:
    (tmp_path / "config.yaml").write_text(getattr(request, "param", CONFIG))
    catalog: Catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    clock = FakeClock(T0)
    started = IncidentManager(
        store, TemplateRenderer(), LinkSigner(b"k" * 32), failing_checks=lambda c, s: [], wall=clock
    )
    started.configure(catalog)
    await started.start(clock.now)
    try:
        yield started, store, clock
    finally:
        await store.close()


async def pages(store: Store) -> list[tuple[str, str]]:
    """(channel, subject) of every message queued so far."""
    return [(r.message.channel, r.message.subject) for r in await store.list_outbox()]


async def test_a_dependency_down_holds_back_the_pages_of_what_depends_on_it(
    manager: tuple[IncidentManager, Store, FakeClock],
) -> None:
    incidents, store, clock = manager

    async def change(customer: str, service: str, before: Status, after: Status) -> None:
        await incidents.status_changed(customer, service, before, after, "connection refused")

    async def at(minutes: float) -> None:
        clock.now = T0 + minutes * MIN
        await incidents.tick()

    for customer in ("contoso", "fabrikam"):
        for service in ("entra-signin", "exchange-online"):
            await change(customer, service, Status.UNKNOWN, Status.UP)
    # contoso's sign-in fails, and Exchange with it: one page, for sign-in
    await change("contoso", "entra-signin", Status.UP, Status.DOWN)
    await at(1)
    await change("contoso", "exchange-online", Status.UP, Status.DOWN)
    # fabrikam's sign-in works: its Exchange outage is its own and pages
    await change("fabrikam", "exchange-online", Status.UP, Status.DOWN)
    await at(2)
    subjects = await pages(store)
    assert [s for c, s in subjects if "Contoso" in s] == [
        s for c, s in subjects if "Contoso" in s and "Entra ID sign-in" in s
    ]
    assert any("Fabrikam" in s and "Exchange Online" in s for _, s in subjects)
    exchange = next(
        i
        for i in incidents.open_incidents()
        if (i.customer, i.service) == ("contoso", "exchange-online")
    )
    assert exchange.muted
    _, timeline = await incidents.get(exchange.id)
    assert timeline[0].kind == "opened"
    assert timeline[0].detail["why"] == "depends on entra-signin, which is down"
    # the held incident does not escalate either, while sign-in's does
    await at(20)
    assert not any("Contoso" in s and "Exchange" in s for _, s in await pages(store))
    assert any(c == "lead" and "Entra ID sign-in" in s for c, s in await pages(store))

    # sign-in comes back, Exchange stays down: now it pages, from its first step
    await change("contoso", "entra-signin", Status.DOWN, Status.UP)
    await at(21)
    exchange_pages = [
        (c, s) for c, s in await pages(store) if "Contoso" in s and "Exchange Online" in s
    ]
    assert [c for c, _ in exchange_pages] == ["noc"]
    _, timeline = await incidents.get(exchange.id)
    assert [e.kind for e in timeline if e.kind in ("muted", "unmuted")] == ["unmuted"]


async def test_an_outage_already_paged_is_held_once_its_dependency_fails(
    manager: tuple[IncidentManager, Store, FakeClock],
) -> None:
    incidents, store, clock = manager
    await incidents.status_changed("contoso", "exchange-online", Status.UP, Status.DOWN, "503")
    await incidents.status_changed("contoso", "entra-signin", Status.UP, Status.DOWN, "timeout")
    clock.now = T0 + MIN
    await incidents.tick()
    exchange = next(i for i in incidents.open_incidents() if i.service == "exchange-online")
    assert exchange.muted  # its escalation waits on sign-in's incident
    clock.now = T0 + 20 * MIN
    await incidents.tick()
    leads = [s for c, s in await pages(store) if c == "lead"]
    assert leads and all("Entra ID sign-in" in s for s in leads)


VENDOR_WIDE = CONFIG.replace(
    "correlation: {enabled: false}", "correlation: {min_customers: 2, hold: 1m}"
)


@pytest.mark.parametrize("manager", [VENDOR_WIDE], indirect=True)
async def test_sign_in_down_everywhere_is_one_page_not_two_vendor_incidents(
    manager: tuple[IncidentManager, Store, FakeClock],
) -> None:
    incidents, store, clock = manager
    for service in ("entra-signin", "exchange-online"):
        for customer in ("contoso", "fabrikam"):
            await incidents.status_changed(customer, service, Status.UP, Status.DOWN, "timeout")
            clock.now += 5
    for minutes in (1, 2, 20):
        clock.now = T0 + minutes * MIN
        await incidents.tick()
    vendor_side = {i.service: i for i in incidents.open_incidents() if i.customer == "*"}
    assert set(vendor_side) == {"entra-signin", "exchange-online"}
    assert vendor_side["exchange-online"].muted and not vendor_side["entra-signin"].muted
    subjects = [s for _, s in await pages(store)]
    assert subjects and all("Entra ID sign-in" in s for s in subjects), subjects
    # sign-in is back everywhere and Exchange is still down: now Exchange's group pages
    for customer in ("contoso", "fabrikam"):
        await incidents.status_changed(customer, "entra-signin", Status.DOWN, Status.UP, "")
    clock.now = T0 + 21 * MIN
    await incidents.tick()
    assert any("Exchange Online" in s for _, s in await pages(store))
