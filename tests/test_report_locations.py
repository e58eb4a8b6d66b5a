"""The auditor report breaks availability down by location, from a real SQLite store.

October 2026 in Beijing time: 31 days, 44,640 minutes. Contoso's Exchange (target
99.9 %) is probed from four locations, quorum 2; what each saw, as its node or agent
recorded it in the location history:

* sh-telecom: up since before the month (after a down before it, superseded);
* bj-unicom: up from the start, down 90 min from minute 1,000;
* gz-mobile (an agent): up from minute 100 (the first 100 min unknown), down from
  minute 40,000 to the end; the agent was cut off around minute 20,000 and its changes
  of then (down 60 min from minute 20,000) reached the store later than the down of
  minute 40,000;
* azure-cn-east2: nothing recorded at all.

The web app is probed from one place. A config without locations keeps the report it
had before locations existed, byte for byte.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor import __version__
from monitor.catalog import Catalog, load_catalog
from monitor.reports.build import build_report
from monitor.reports.model import Report, compose, parse_period
from monitor.reports.render import check_templates, to_csv, to_html, to_json
from monitor.store import Store
from monitor.store.locations import LocationChange
from tests import test_report_coverage

CONFIG = """
services:
  exchange-online:
    name: Exchange <Online> & Mail
    sla_target: 99.9
    locations: [sh-telecom, bj-unicom, gz-mobile, azure-cn-east2]
    quorum: 2
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
  web-app:
    name: Web app
    sla_target: 99.9
    checks: [{name: health, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online, web-app]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     subscriptions: [web-app]}
"""
PERIOD = parse_period("2026-10", "Asia/Shanghai")
T = PERIOD.start
MIN = 60.0
MONTH = 44_640.0  # minutes
OWA = "contoso/exchange-online/owa"
LOCATIONS = ["sh-telecom", "bj-unicom", "gz-mobile", "azure-cn-east2"]
GOLDEN = Path(__file__).parent / "testdata" / "reports"


def seen(location: str, status: str, minute: float, node: str = "node-1") -> LocationChange:
    return LocationChange(OWA, location, status, T + minute * MIN, f"{status} seen", node)


async def record_the_month(store: Store, catalog: Catalog) -> None:
    await store.record_statuses([(c, s, "up", T) for c, s in catalog.subscriptions])
    await store.close_all_open(PERIOD.end)
    await store.record_location_changes(
        [
            seen("sh-telecom", "down", -2 * 1440),
            seen("sh-telecom", "up", -1440),
            seen("bj-unicom", "up", 0),
            seen("bj-unicom", "down", 1000),
            seen("bj-unicom", "up", 1090),
            seen("gz-mobile", "up", 100, "agent-gz"),
            seen("gz-mobile", "down", 40_000, "agent-gz"),
            # another target's history (no longer configured) stays out of the report
            LocationChange("gone/exchange-online/owa", "bj-unicom", "down", T, "x", "n"),
        ],
        T + 40_000 * MIN,
    )
    # the agent's buffered changes, sent when it could reach the server again
    await store.record_location_changes(
        [
            seen("gz-mobile", "down", 20_000, "agent-gz"),
            seen("gz-mobile", "up", 20_060, "agent-gz"),
        ],
        T + 40_100 * MIN,
    )


@pytest.fixture
async def located(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"a" * 32)
    try:
        await record_the_month(store, catalog)
        yield store, catalog
    finally:
        await store.close()


async def built(store: Store, catalog: Catalog, customer: str | None = None) -> Report:
    return await build_report(store, catalog, PERIOD, now=PERIOD.end + 86400, customer=customer)


async def test_json_gives_each_locations_figures(located: tuple[Store, Catalog]) -> None:
    document = json.loads(to_json(await built(*located)))
    contoso, fabrikam = document["customers"]
    exchange, web = contoso["subscriptions"]
    assert exchange["sla_verdict"] == "met"  # the quorum's view: up all month
    by_location = {f["location"]: f for f in exchange["locations"]}
    assert [f["location"] for f in exchange["locations"]] == LOCATIONS
    assert {f["check"] for f in exchange["locations"]} == {"owa"}
    sh, bj, gz, azure = (by_location[name] for name in LOCATIONS)

    assert sh["minutes"]["up"] == MONTH and sh["coverage_ratio"] == 1.0
    assert (sh["sla_availability_ratio"], sh["sla_verdict"]) == (1.0, "met")

    assert (bj["minutes"]["up"], bj["minutes"]["down"]) == (MONTH - 90, 90.0)
    assert bj["sla_availability_ratio"] == round((MONTH - 90) / MONTH, 6)
    assert bj["sla_verdict"] == "missed"  # 99.798 % from Beijing

    # the agent's late changes counted where they happened: 60 + 4,640 min down
    assert gz["minutes"] == {
        "up": MONTH - 100 - 4700,
        "degraded": 0.0,
        "down": 4700.0,
        "maintenance": 0.0,
        "unknown": 100.0,
    }
    assert gz["coverage_ratio"] == round((MONTH - 100) / MONTH, 6)
    assert gz["sla_availability_ratio"] == round((MONTH - 100 - 4700) / (MONTH - 100), 6)
    assert gz["downtime_minutes"] == 4700.0

    assert azure["coverage_ratio"] == 0.0 and azure["minutes"]["unknown"] == MONTH
    assert azure["sla_availability_ratio"] is None
    assert azure["sla_verdict"] == "not determinable"

    assert web["locations"] == [] and fabrikam["subscriptions"][0]["locations"] == []
    assert "locations" in document["definitions"]["by_location"]


async def test_csv_has_a_row_per_location_after_its_subscription(
    located: tuple[Store, Catalog],
) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(await built(*located)))))
    records = [(r["record"], r["service"], r["location"]) for r in rows[:6]]
    assert records == [
        ("subscription", "exchange-online", ""),
        *[("location", "exchange-online", name) for name in LOCATIONS],
        ("subscription", "web-app", ""),
    ]
    sh, bj, gz, azure = rows[1:5]
    assert {r["check"] for r in rows[1:5]} == {"owa"} and bj["customer"] == "contoso"
    assert float(bj["down_minutes"]) == 90.0
    assert float(bj["sla_availability_percent"]) == round((MONTH - 90) / MONTH * 100, 4)
    assert bj["sla_verdict"] == "missed" and bj["sla_met"] == "False"
    assert float(gz["down_minutes"]) == 4700.0 and float(gz["unknown_minutes"]) == 100.0
    assert float(gz["coverage_percent"]) == round((MONTH - 100) / MONTH * 100, 4)
    assert float(sh["sla_availability_percent"]) == 100.0
    assert float(azure["coverage_percent"]) == 0.0
    assert azure["sla_availability_percent"] == ""
    assert azure["sla_verdict"] == "not determinable"


async def test_html_has_a_table_per_located_subscription(located: tuple[Store, Catalog]) -> None:
    html = to_html(await built(*located))
    contoso = html.split('<section class="customer">')[1]
    section = contoso.split("<h3>By location</h3>")[1].split("<h3>Incidents</h3>")[0]
    assert "Exchange &lt;Online&gt; &amp; Mail" in section and "<Online>" not in html
    rows = {name: section.split(f"<td>{name}</td>")[1].split("</tr>")[0] for name in LOCATIONS}
    assert "100.000 %" in rows["sh-telecom"] and "100.00 %" in rows["sh-telecom"]
    assert "99.798 %" in rows["bj-unicom"] and "90.0 min" in rows["bj-unicom"]
    # met and missed as the SLA column shows them: against the service's 99.9 %
    assert '<td class="n met">100.000 %</td>' in rows["sh-telecom"]
    assert '<td class="n missed">99.798 % (missed)</td>' in rows["bj-unicom"]
    assert "89.448 %" in rows["gz-mobile"] and "99.78 %" in rows["gz-mobile"]
    assert "4,700.0 min" in rows["gz-mobile"]
    assert "not determinable" in rows["azure-cn-east2"] and "0.00 %" in rows["azure-cn-east2"]
    assert "Web app" not in section  # probed from one place: nothing to break down
    fabrikam = html.split('<section class="customer">')[2]
    assert "By location" not in fabrikam
    assert "by_location" in html  # the definition


async def test_one_customers_report_reads_its_own_locations(
    located: tuple[Store, Catalog],
) -> None:
    contoso = json.loads(to_json(await built(*located, customer="contoso")))
    [exchange, _] = contoso["customers"][0]["subscriptions"]
    assert [f["minutes"]["down"] for f in exchange["locations"]] == [0.0, 90.0, 4700.0, 0.0]
    fabrikam = json.loads(to_json(await built(*located, customer="fabrikam")))
    assert fabrikam["customers"][0]["subscriptions"][0]["locations"] == []


async def test_a_config_without_locations_keeps_its_report_byte_for_byte(tmp_path: Path) -> None:
    """test_report_coverage's config and history, against the report as it was rendered
    before locations (regenerate after a deliberate layout change: WRITE_REPORT_GOLDEN=1)."""
    (tmp_path / "config.yaml").write_text(test_report_coverage.CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"a" * 32)
    try:
        start, length = test_report_coverage.T, test_report_coverage.LENGTH
        await store.record_statuses([(c, s, "up", start) for c, s in catalog.subscriptions])
        await store.close_all_open(start + 0.4 * length, [("contoso", "exchange-online")])
        await store.close_all_open(test_report_coverage.PERIOD.end)
        report = await build_report(
            store,
            catalog,
            test_report_coverage.PERIOD,
            now=test_report_coverage.PERIOD.end + 86400,
        )
    finally:
        await store.close()
    assert not report.by_location
    for extension, text in (
        ("json", to_json(report)),
        ("csv", to_csv(report)),
        ("html", to_html(report)),
    ):
        golden = GOLDEN / f"without_locations.{extension}"
        rendered = text.replace(__version__, "@VERSION@").encode()  # CSV lines end in CRLF
        if os.environ.get("WRITE_REPORT_GOLDEN") == "1":
            golden.write_bytes(rendered)
        assert rendered == golden.read_bytes(), extension


async def test_the_template_check_renders_the_by_location_section(
    located: tuple[Store, Catalog],
) -> None:
    """validate and reload render the report with an empty history: each location then
    has no change at all, which the section must show, not fail on."""
    _, catalog = located
    assert check_templates(catalog) == []
    empty = compose(catalog, PERIOD, [], [], [], now=PERIOD.end, audit_head=(0, ""))
    html = to_html(empty)
    assert html.count("not determinable</td>") == len(LOCATIONS)


async def test_the_report_command_gives_the_breakdown(tmp_path: Path) -> None:
    """``csp-monitor report`` reads the history through build_report, as the API does."""
    from monitor.alerting import audit_key, store_url

    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(store_url(catalog, tmp_path), audit_key=audit_key(catalog, tmp_path))
    try:
        await record_the_month(store, catalog)
    finally:
        await store.close()
    output = tmp_path / "october.json"
    command = ["report", "--period", "2026-10", "--format", "json", "--output", str(output)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor.cli",
        *command,
        "--config",
        str(tmp_path / "config.yaml"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    [exchange, _] = json.loads(output.read_text())["customers"][0]["subscriptions"]
    assert [f["minutes"]["down"] for f in exchange["locations"]] == [0.0, 90.0, 4700.0, 0.0]
