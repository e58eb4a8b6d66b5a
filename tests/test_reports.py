"""Reports against a scripted month whose every figure was worked out by hand.

October 2026 in Beijing time: 31 days, 44,640 minutes. The month is lived
through the real incident manager and store with a fake clock:

* contoso / exchange-online (target 99.9 %): down 90 min from minute 1,000
  (acknowledged after 12 min), degraded 60 min from minute 5,000
  (acknowledged after 30 min; degraded does not count as downtime here);
* contoso / web-app (target 99.95 % in the subscription): down 120 min inside a maintenance window
  from minute 10,000, then down 30 min from minute 30,000, never acknowledged;
* fabrikam / exchange-online: up all month;
* the monitor itself was stopped from minute 20,000 to 20,045: 45 min unknown
  for everyone.

Contoso's tier must acknowledge within 15 min.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from monitor.catalog import Catalog, load_catalog
from monitor.engine.model import MaintenanceWindow
from monitor.incident_manager import IncidentManager
from monitor.links import LinkSigner
from monitor.notify.templates import TemplateRenderer
from monitor.probe import Status
from monitor.reports.build import build_report, month_to_date
from monitor.reports.model import parse_period
from monitor.reports.render import to_csv, to_html, to_json
from monitor.store import Store
from tests.conftest import FakeClock

CONFIG = """
tiers:
  gold: {sla_target: 99.9, ack_within: 15m}
  silver: {sla_target: 99.9}
incidents: {correlation: {enabled: false}, cooldown: 1s}
services:
  exchange-online:
    name: Exchange Online
    sla_target: 99.9
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
  web-app:
    name: Web app
    sla_target: 99.95
    checks: [{name: health, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn, tier: gold,
     subscriptions: [exchange-online, {service: web-app, sla_target: 99.95}]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn, tier: silver,
     subscriptions: [exchange-online]}
"""
PERIOD = parse_period("2026-10", "Asia/Shanghai")
T = PERIOD.start
MIN = 60.0
SUBSCRIPTIONS = [
    ("contoso", "exchange-online"),
    ("contoso", "web-app"),
    ("fabrikam", "exchange-online"),
]


async def live_the_month(store: Store, catalog: Catalog) -> None:
    clock = FakeClock(T)

    def manager() -> IncidentManager:
        built = IncidentManager(
            store,
            TemplateRenderer(),
            LinkSigner(b"k" * 32),
            failing_checks=lambda c, s: [],
            wall=clock,
        )
        built.configure(catalog)
        return built

    async def at(minute: float) -> None:
        clock.now = T + minute * MIN

    async def change(m: IncidentManager, key: tuple[str, str], old: Status, new: Status) -> None:
        await m.status_changed(*key, old, new, f"{new} for the test", clock.now)

    first = manager()
    await first.start(clock.now)
    for key in SUBSCRIPTIONS:
        await change(first, key, Status.UNKNOWN, Status.UP)
    exchange, web = SUBSCRIPTIONS[0], SUBSCRIPTIONS[1]
    # exchange down 90 min, acknowledged after 12
    await at(1000)
    await change(first, exchange, Status.UP, Status.DOWN)
    [incident] = first.open_incidents()
    await at(1012)
    await first.acknowledge(incident.id, "li.wei", clock.now)
    await at(1090)
    await change(first, exchange, Status.DOWN, Status.UP)
    # exchange degraded 60 min, acknowledged after 30
    await at(5000)
    await change(first, exchange, Status.UP, Status.DEGRADED)
    [incident] = first.open_incidents()
    await at(5030)
    await first.acknowledge(incident.id, "wang.fang", clock.now)
    await at(5060)
    await change(first, exchange, Status.DEGRADED, Status.UP)
    # planned work on the web app: 120 min down inside a maintenance window
    await first.add_maintenance(
        MaintenanceWindow(
            "MW-1",
            T + 10000 * MIN,
            T + 10120 * MIN,
            customer="contoso",
            service="web-app",
            reason="App Service plan upgrade",
            created_by="noc",
        )
    )
    await at(10000)
    await change(first, web, Status.UP, Status.DOWN)
    await at(10120)
    await change(first, web, Status.DOWN, Status.UP)
    await first.tick(clock.now)
    # the monitor stops for 45 minutes
    await at(20000)
    await first.close(clock.now)
    await at(20045)
    second = manager()
    await second.start(clock.now)
    for key in SUBSCRIPTIONS:
        await change(second, key, Status.UNKNOWN, Status.UP)
    # the web app fails for 30 minutes; nobody acknowledges
    await at(30000)
    await change(second, web, Status.UP, Status.DOWN)
    await at(30030)
    await change(second, web, Status.DOWN, Status.UP)
    await at(44640)
    await second.close(clock.now)


@pytest.fixture
async def month(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"a" * 32)
    try:
        await live_the_month(store, catalog)
        yield store, catalog
    finally:
        await store.close()


def minutes(document: dict[str, float]) -> dict[str, float]:
    return {status: round(value, 2) for status, value in document.items()}


async def test_every_figure_equals_the_hand_computed_one(month: tuple[Store, Catalog]) -> None:
    store, catalog = month
    report = await build_report(store, catalog, PERIOD, now=T + 50000 * MIN)
    document = json.loads(to_json(report))
    contoso, fabrikam = document["customers"]
    exchange, web = contoso["subscriptions"]
    assert minutes(exchange["minutes"]) == {
        "up": 44445.0,
        "degraded": 60.0,
        "down": 90.0,
        "maintenance": 0.0,
        "unknown": 45.0,
    }
    assert exchange["measured_minutes"] == 44595.0
    assert exchange["sla_availability_ratio"] == round(44505 / 44595, 6)
    assert exchange["raw_availability_ratio"] == round(44505 / 44595, 6)
    assert exchange["sla_met"] is False
    assert exchange["downtime_budget_minutes"] == 44.64
    assert exchange["downtime_budget_left_minutes"] == -45.36
    assert exchange["coverage_ratio"] == round(44595 / 44640, 6)
    [gap] = exchange["coverage_gaps"]
    assert gap["minutes"] == 45.0 and gap["start"].startswith("2026-10-14T")
    assert minutes(web["minutes"]) == {
        "up": 44445.0,
        "degraded": 0.0,
        "down": 30.0,
        "maintenance": 120.0,
        "unknown": 45.0,
    }
    assert web["sla_availability_ratio"] == round(44445 / 44475, 6)
    assert web["raw_availability_ratio"] == round(44445 / 44595, 6)
    assert web["sla_met"] is False  # 99.933 % < 99.95 %
    assert web["downtime_budget_minutes"] == round(0.0005 * (44640 - 120), 2)
    [fabrikam_exchange] = fabrikam["subscriptions"]
    assert fabrikam_exchange["sla_availability_ratio"] == 1.0
    assert fabrikam_exchange["sla_met"] is True
    # incidents: 12 and 30 min to acknowledge, 90, 60 and 30 min to resolve
    response = contoso["response"]
    assert (response["mtta_minutes"], response["mttr_minutes"]) == (21.0, 60.0)
    incidents = contoso["incidents"]
    assert [i["time_to_acknowledge_minutes"] for i in incidents] == [12.0, 30.0, None, None]
    assert [i["time_to_resolve_minutes"] for i in incidents] == [90.0, 60.0, 120.0, 30.0]
    assert incidents[0]["acknowledged_by"] == "li.wei"
    # the 30-min ack and the never-acknowledged 30-min outage breach the 15-min policy; the
    # incident inside maintenance owed no response
    assert response["breaching_response_policy"] == [incidents[1]["id"], incidents[3]["id"]]
    assert (response["incidents"], response["acknowledged"], response["resolved"]) == (3, 2, 3)
    assert [w["id"] for w in contoso["maintenance_windows"]] == ["MW-1"]
    assert fabrikam["incidents"] == []
    assert document["overall"]["mttr_minutes"] == 60.0
    head = await store.audit_head()
    assert document["evidence"]["audit_chain_head_seq"] == head[0] > 0
    # an auditor recomputes the SLA figure from the raw intervals
    intervals = exchange["status_intervals"]
    down = sum(
        min(i["end"], PERIOD.end) - max(i["start"], PERIOD.start)
        for i in intervals
        if i["status"] == "down"
    )
    assert down / 60 == 90.0


async def test_csv_carries_the_same_numbers(month: tuple[Store, Catalog]) -> None:
    store, catalog = month
    report = await build_report(store, catalog, PERIOD, now=T + 50000 * MIN)
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    web = next(r for r in rows if r["record"] == "subscription" and r["service"] == "web-app")
    assert float(web["sla_availability_percent"]) == round(44445 / 44475 * 100, 4)
    assert float(web["maintenance_minutes"]) == 120.0
    assert web["sla_met"] == "False"
    response = next(
        r for r in rows if r["record"] == "customer_response" and r["customer"] == "contoso"
    )
    assert (float(response["mtta_minutes"]), float(response["mttr_minutes"])) == (21.0, 60.0)


async def test_html_is_self_contained_and_names_what_an_auditor_needs(
    month: tuple[Store, Catalog],
) -> None:
    store, catalog = month
    report = await build_report(store, catalog, PERIOD, now=T + 50000 * MIN)
    html = to_html(report)
    for text in (
        "Uptime and SLA report — 2026-10",
        "Contoso",
        "Fabrikam",
        "99.798 %",
        "99.933 %",
        "(missed)",
        "App Service plan upgrade",
        "li.wei",
        "Audit chain head",
        "<svg",
        "page-break-before",
    ):
        assert text in html, text
    assert "<script" not in html and "http://" not in html.replace("http://www.w3", "")


async def test_the_metric_is_the_reports_figure(month: tuple[Store, Catalog]) -> None:
    store, catalog = month
    now = T + 44640 * MIN - 1  # the last second of the month: the month-to-date figure
    figures = await month_to_date(store, catalog, now)
    report = await build_report(store, catalog, PERIOD, now=now)
    for customer in report.customers:
        for item in customer.subscriptions:
            assert figures[(customer.id, item.service)] == (
                item.availability.sla_availability,
                item.availability.coverage,
            )
    assert figures[("contoso", "web-app")][0] == pytest.approx(44445 / 44475, abs=1e-6)
    # the early run's figures, of the subscriptions named only: the same values
    some = [("contoso", "web-app"), ("fabrikam", "exchange-online"), ("nobody", "web-app")]
    early = await month_to_date(store, catalog, now, some)
    assert early == {key: figures[key] for key in some[:2]}


async def test_monthly_report_is_queued_to_its_channels(
    tmp_path: Path, month: tuple[Store, Catalog]
) -> None:
    from monitor.housekeeping import Housekeeping

    store, _ = month
    (tmp_path / "monthly.yaml").write_text(
        CONFIG
        + """
reports:
  monthly: {enabled: true, channels: [auditors], per_customer: true}
channels:
  auditors: {type: file, directory: reports, }
""".replace(", }", "}")
    )
    catalog = load_catalog(tmp_path / "monthly.yaml", env={})
    woken = []
    housekeeping = Housekeeping(
        store,
        lambda c, s, v, cover: None,
        lambda: woken.append(1),
        tmp_path,
        wall=lambda: T + 40 * 86400,
    )  # in November: report October
    housekeeping.configure(catalog)
    assert await housekeeping.monthly_report() == 2  # one per customer
    rows = await store.list_outbox()
    assert sorted(r.dedup_key for r in rows) == [
        "report:2026-10:contoso:auditors",
        "report:2026-10:fabrikam:auditors",
    ]
    contoso = next(r.message for r in rows if "contoso" in r.dedup_key)
    assert contoso.subject == "Uptime and SLA report 2026-10: Contoso"
    assert "Uptime and SLA report — 2026-10" in (contoso.html or "")
    assert "Exchange Online" in contoso.text and "MISSED" in contoso.text
    [(name, kind, body)] = contoso.attachments  # the same report as a PDF
    assert (name, kind) == ("uptime-2026-10-contoso.pdf", "application/pdf")
    pdf = PdfReader(io.BytesIO(base64.b64decode(body)))
    assert "Contoso" in pdf.pages[1].extract_text()
    assert woken
    assert await housekeeping.monthly_report() == 0  # the same month is never sent twice


async def test_report_and_audit_verify_commands(tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    from monitor.alerting import audit_key, store_url

    store = await Store.open(store_url(catalog, tmp_path), audit_key=audit_key(catalog, tmp_path))
    await live_the_month(store, catalog)
    await store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.cli", *args, "--config", str(tmp_path / "config.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = cli(
        "report",
        "--period",
        "2026-10",
        "--format",
        "csv",
        "--output",
        str(tmp_path / "october.csv"),
    )
    assert done.returncode == 0, done.stderr
    assert "contoso,Contoso,web-app" in (tmp_path / "october.csv").read_text()
    verified = cli("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("audit log OK:")
    with sqlite3.connect(tmp_path / "data" / "csp-monitor.db") as db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    tampered = cli("audit", "verify")
    assert tampered.returncode == 1
    assert "entry 5: content does not match its hash" in tampered.stderr


async def test_only_windows_that_occurred_in_the_period_are_listed(
    month: tuple[Store, Catalog],
) -> None:
    store, catalog = month
    day = 24 * 60 * MIN
    sunday_sep_6 = T - 25 * day + 120 * MIN  # 02:00 Beijing time
    for window in (
        MaintenanceWindow(
            "MW-SUNDAYS",
            sunday_sep_6,
            sunday_sep_6 + 120 * MIN,
            customer="fabrikam",
            recurrence="weekly",
            reason="Exchange hybrid patching",
        ),
        MaintenanceWindow(
            "MW-SEPTEMBER", sunday_sep_6, sunday_sep_6 + 60 * MIN, customer="fabrikam"
        ),
        MaintenanceWindow(
            "MW-NOVEMBER",
            T + 40 * day,
            T + 40 * day + 60 * MIN,
            customer="fabrikam",
            recurrence="weekly",
        ),
    ):
        await store.add_maintenance(window, T - 30 * day)

    report = await build_report(store, catalog, PERIOD, now=T + 50000 * MIN)
    document = json.loads(to_json(report))
    fabrikam = next(c for c in document["customers"] if c["id"] == "fabrikam")
    [listed] = fabrikam["maintenance_windows"]
    assert listed["id"] == "MW-SUNDAYS"
    # Sundays 02:00 in Beijing, which JSON gives in UTC
    assert [begins[:16] for begins, _ in listed["occurrences_in_period"]] == [
        "2026-10-03T18:00",
        "2026-10-10T18:00",
        "2026-10-17T18:00",
        "2026-10-24T18:00",
    ]
    assert listed["minutes_in_period"] == 480.0
    html = to_html(report)
    assert "MW-SUNDAYS" in html and "4 (480.0 min)" in html
    assert "MW-SEPTEMBER" not in html and "MW-NOVEMBER" not in html


@pytest.mark.parametrize(("last_run_took", "spaced_by"), [(0.2, 10), (2.0, 10), (8.0, 40)])
async def test_early_sla_refreshes_are_spaced_by_what_the_last_one_cost(
    tmp_path: Path, month: tuple[Store, Catalog], last_run_took: float, spaced_by: float
) -> None:
    """While first statuses arrive the SLA metric is recomputed early, but at 50,000
    subscriptions a run takes seconds: the next early one waits five times as long."""

    from monitor.housekeeping import Housekeeping

    store, catalog = month
    housekeeping = Housekeeping(store, lambda c, s, v, cover: None, lambda: None, tmp_path)
    housekeeping.start(catalog)
    try:
        whole = housekeeping.next_sla_refresh()
        housekeeping.refresh_soon([("contoso", "web-app")])  # the first early run, in a second
        first = housekeeping.next_early_sla_refresh()
        assert first is not None
        assert housekeeping.next_sla_refresh() == whole  # every subscription's: not moved
        # it ran, and took this long
        housekeeping._scheduler.remove_job("sla-metric-early")
        housekeeping.last_soon_seconds = last_run_took
        housekeeping.refresh_soon([("fabrikam", "web-app")])  # more first statuses
        second = housekeeping.next_early_sla_refresh()
        assert second is not None
        assert round((second - first).total_seconds()) == spaced_by
        housekeeping.refresh_soon([("contoso", "exchange")])  # taken by the run already due
        assert housekeeping.next_early_sla_refresh() == second
    finally:
        housekeeping.shutdown()


async def test_an_early_sla_refresh_computes_the_subscriptions_new_to_it_only(
    tmp_path: Path, month: tuple[Store, Catalog]
) -> None:
    """An early run that read the whole month for every subscription, again and again while
    first statuses arrived, kept the leader and PostgreSQL busy for a minute at 60,000."""
    from monitor.housekeeping import Housekeeping

    store, catalog = month
    now = T + 44640 * MIN - 1
    expected = await month_to_date(store, catalog, now)
    shown: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    housekeeping = Housekeeping(
        store,
        lambda c, s, v, cover: shown.__setitem__((c, s), (v, cover)),
        lambda: None,
        tmp_path,
        wall=lambda: now,
    )
    housekeeping.configure(catalog)
    housekeeping.refresh_soon([("contoso", "web-app")])
    housekeeping.refresh_soon([("fabrikam", "exchange-online")])
    await housekeeping._refresh_stale()
    assert shown == {
        key: expected[key] for key in [("contoso", "web-app"), ("fabrikam", "exchange-online")]
    }
    shown.clear()
    await housekeeping._refresh_stale()  # nothing new since
    assert shown == {}
    await housekeeping.refresh_sla()  # the interval's run: every subscription
    assert shown == expected
