"""Correlation per location, end to end: one real daemon (no cluster) in loc-a, probing
from its own source address, and a target server that fails requests from that address
only. The other two locations' reports are filed as their nodes or agents would file
them (up), so loc-a alone sees the service down for three customers: that is ONE
vendor-side incident saying "from loc-a only", not one incident per customer and not a
vendor-wide outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.engine.model import Incident
from monitor.engine.quorum import LocationReport
from monitor.probe import Status
from tests.conftest import PathServer, wait_until

CUSTOMERS = ("contoso", "fabrikam", "adatum")
OTHERS = ("loc-b", "loc-c")  # no node here: their reports are filed by the test
CONFIG = """
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 1s
  location: loc-a
  source_address: 127.0.0.2
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 1, locations: [loc-a, loc-b, loc-c], quorum: 2}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  correlation: {{enabled: true, window: 1m, min_customers: 3, hold: 1s,
                escalation_policy: vendor}}
escalation_policies:
  standard:
    steps: [{{after: 0s, notify: [outbox]}}]
  vendor:
    steps: [{{after: 0s, notify: [vendor-outbox]}}]
channels:
  outbox: {{type: file, directory: outbox}}
  vendor-outbox: {{type: file, directory: vendor}}
services:
  exchange-online:
    name: Exchange Online
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{port}/{{customer.id}}"}}
customers:
{customers}
"""


@pytest.fixture
async def daemon(tmp_path: Path, path_server: PathServer) -> AsyncIterator[Daemon]:
    customers = "\n".join(
        f"  - {{id: {c}, name: {c.title()} Ltd., tenant_domain: {c}.example, "
        "subscriptions: [exchange-online]}"
        for c in CUSTOMERS
    )
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=path_server.port, customers=customers))
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def file_other_locations(daemon: Daemon, rounds: int = 600) -> None:
    """loc-b and loc-c see the service up: a report each every 100 ms (bounded)."""
    since = time.time()
    for _ in range(rounds):
        desk = daemon.desk
        if desk is not None:
            for customer in CUSTOMERS:
                for location in OTHERS:
                    report = LocationReport(location, Status.UP, "", time.time(), since, "agent")
                    desk.file(f"{customer}/exchange-online/owa", report)
        await asyncio.sleep(0.1)


def vendor_side(daemon: Daemon) -> list[Incident]:
    manager = daemon.alerting.manager
    assert manager is not None
    return [i for i in manager.open_incidents() if i.customer == "*"]


async def test_customers_seen_down_from_one_location_are_one_incident_saying_so(
    daemon: Daemon, path_server: PathServer, tmp_path: Path
) -> None:
    feeder = asyncio.ensure_future(file_other_locations(daemon))
    try:
        manager = daemon.alerting.manager
        assert manager is not None
        path_server.failing = {"127.0.0.2"}  # loc-a's path to the service is broken
        await wait_until(lambda: vendor_side(daemon), within=20, what="a vendor-side incident")
        await wait_until(
            lambda: len([i for i in manager.open_incidents() if i.vendor_group]) == 3,
            within=10,
            what="the three customers in the group",
        )
        [group] = vendor_side(daemon)
        assert group.down_from == ("loc-a",)
        assert group.status is Status.DEGRADED  # not a vendor-wide outage
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{daemon.bound_port}/api/v1/incidents/{group.id}") as r,
        ):
            assert (await r.json())["down_from"] == ["loc-a"]
        assert group.reason.startswith("3 customers affected from loc-a only: ")
        customers = [i for i in manager.open_incidents() if i.customer != "*"]
        assert sorted(i.customer for i in customers) == sorted(CUSTOMERS)
        for incident in customers:
            assert incident.vendor_group == group.id
            assert incident.status is Status.DEGRADED
            assert incident.down_from == ("loc-a",)
            assert incident.reason.startswith("down from loc-a (status 503")
        # one page, to the vendor policy's channel, saying where from; none per customer
        await wait_until(
            lambda: list((tmp_path / "vendor").glob("*")), within=10, what="the vendor page"
        )
        [page] = [p.read_text() for p in (tmp_path / "vendor").glob("*")]
        assert "from loc-a only" in page
        await asyncio.sleep(1.5)  # past the customers' hold: their own pages stay grouped
        assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").glob("*"))
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
