"""Maintenance windows: occurrences, bad windows, what the API and the CLI accept.

Occurrences are checked against tables worked out by hand (DST in Berlin, a
window across midnight, the 31st) and against a straightforward day-by-day
expansion on random windows. A window the engine cannot evaluate (an unknown
time zone from an old store row) must not stop ticks, status changes or
reports. The API and ``csp-monitor maintenance add`` refuse bad windows with
every bad field named, and store nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from monitor.catalog import load_catalog
from monitor.cli import main
from monitor.daemon import Daemon
from monitor.engine.maintenance import PERIOD_DAYS, in_maintenance, is_active, occurrences
from monitor.engine.model import MaintenanceWindow
from monitor.incident_manager import IncidentManager
from monitor.links import LinkSigner
from monitor.notify.templates import TemplateRenderer
from monitor.probe import Status
from monitor.reports.build import build_report
from monitor.reports.model import parse_period
from monitor.reports.render import render
from monitor.store import Store
from tests.conftest import FakeClock, WebTarget, unused_port

HOUR, DAY = 3600.0, 86400.0


def local(text: str, zone: str = "Asia/Shanghai") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


# ----------------------------------------------------------------------------- occurrences


@pytest.mark.parametrize(
    ("zone", "recurrence", "first", "hours", "period", "expected"),
    [
        # 09:00 in Berlin is 08:00 UTC in winter time, 07:00 from the spring change (29 March)
        (
            "Europe/Berlin",
            "daily",
            "2026-03-01 09:00",
            1,
            ("2026-03-27 00:00", "2026-04-01 00:00"),
            [
                "2026-03-27 08:00",
                "2026-03-28 08:00",
                "2026-03-29 07:00",
                "2026-03-30 07:00",
                "2026-03-31 07:00",
            ],
        ),
        # 02:30 does not exist on 29 March in Berlin: it is taken with the offset before the
        # change (02:30+01:00, i.e. 03:30 summer time), as the engine always did
        (
            "Europe/Berlin",
            "daily",
            "2026-03-01 02:30",
            1,
            ("2026-03-28 00:00", "2026-03-31 00:00"),
            ["2026-03-28 01:30", "2026-03-29 01:30", "2026-03-30 00:30"],
        ),
        # 02:30 happens twice on 25 October in Berlin: the first one (summer time) counts
        (
            "Europe/Berlin",
            "daily",
            "2026-10-01 02:30",
            1,
            ("2026-10-24 00:00", "2026-10-27 00:00"),
            ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"],
        ),
        # the weekly Sunday window moves with the clock too
        (
            "Europe/Berlin",
            "weekly",
            "2026-03-01 09:00",
            2,
            ("2026-03-16 00:00", "2026-04-13 00:00"),
            ["2026-03-22 08:00", "2026-03-29 07:00", "2026-04-05 07:00", "2026-04-12 07:00"],
        ),
        # Saturday 23:00 for 3 h in Beijing: the one that began the evening before the
        # period overlaps its first hours
        (
            "Asia/Shanghai",
            "weekly",
            "2026-10-03 23:00",
            3,
            ("2026-11-08 00:00", "2026-11-15 00:00"),
            ["2026-11-07 15:00", "2026-11-14 15:00"],
        ),
        # daily across midnight: the one from the evening before, and the last evening's
        (
            "Asia/Shanghai",
            "daily",
            "2026-10-01 23:00",
            2,
            ("2026-11-01 00:00", "2026-11-03 00:00"),
            ["2026-10-31 15:00", "2026-11-01 15:00", "2026-11-02 15:00"],
        ),
        # the 31st: no occurrence in a shorter month
        (
            "Asia/Shanghai",
            "monthly",
            "2026-01-31 02:00",
            2,
            ("2026-01-01 00:00", "2027-01-01 00:00"),
            [
                f"2026-{month:02d}-30 18:00"
                for month in (1, 3, 5, 7, 8, 10, 12)  # 02:00 on the 31st in Beijing
            ],
        ),
        # monthly on the 15th, before its first occurrence nothing
        (
            "Asia/Shanghai",
            "monthly",
            "2026-11-15 10:00",
            2,
            ("2026-10-01 00:00", "2027-01-01 00:00"),
            ["2026-11-15 02:00", "2026-12-15 02:00"],
        ),
    ],
)
def test_occurrences_by_hand(
    zone: str,
    recurrence: str,
    first: str,
    hours: float,
    period: tuple[str, str],
    expected: list[str],
) -> None:
    starts = local(first, zone)
    window = MaintenanceWindow(
        "MW-T", starts, starts + hours * HOUR, recurrence=recurrence, timezone=zone
    )
    found = occurrences(window, local(period[0], zone), local(period[1], zone))
    assert [utc(begins) for begins, _ in found] == expected
    assert all(ends - begins == hours * HOUR for begins, ends in found)
    for begins, ends in found:  # the tick agrees with the report
        assert is_active(window, begins + 1) and not is_active(window, ends)


def reference_occurrences(
    window: MaintenanceWindow, start: float, end: float
) -> list[tuple[float, float]]:
    """Every local day from a month before ``start`` to ``end``, one by one."""
    zone = ZoneInfo(window.timezone)
    first = datetime.fromtimestamp(window.starts_at, zone)
    duration = window.ends_at - window.starts_at
    day = datetime.fromtimestamp(start, zone).date() - timedelta(days=32)
    last = datetime.fromtimestamp(end, zone).date()
    found = []
    while day <= last:
        begins_today = {
            "daily": True,
            "weekly": day.weekday() == first.weekday(),
            "monthly": day.day == first.day,
        }[window.recurrence or ""]
        if begins_today:
            at = datetime.combine(day, first.timetz()).timestamp()
            if at >= window.starts_at - 1 and at < end and at + duration > start:
                found.append((at, at + duration))
        day += timedelta(days=1)
    return found


def test_occurrences_equal_a_day_by_day_expansion_on_random_windows() -> None:
    rng = random.Random(20261129)
    zones = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]
    for number in range(40):
        zone = rng.choice(zones)
        recurrence = rng.choice(["daily", "weekly", "monthly"])
        range_start = local(f"2026-{rng.randint(1, 12):02d}-01 00:00", zone)
        range_end = range_start + 400 * DAY
        starts = range_start + rng.uniform(-90, 300) * DAY
        duration = rng.choice([60.0, HOUR, rng.uniform(60, PERIOD_DAYS[recurrence] * DAY)])
        window = MaintenanceWindow(
            f"MW-R{number}", starts, starts + duration, recurrence=recurrence, timezone=zone
        )
        expected = reference_occurrences(window, range_start, range_end)
        assert occurrences(window, range_start, range_end) == expected, window
        assert expected or starts > range_end - duration


# ----------------------------------------------------------------------------- bad windows


def skipped(caplog: pytest.LogCaptureFixture, window_id: str) -> int:
    return sum(
        "maintenance_window_skipped" in r.getMessage() and window_id in r.getMessage()
        for r in caplog.records
    )


def test_a_window_that_cannot_be_evaluated_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="monitor.engine.maintenance")
    start = local("2026-11-01 02:00")
    nowhere = MaintenanceWindow(
        "MW-NOWHERE", start, start + 2 * HOUR, recurrence="weekly", timezone="Nowhere/Atlantis"
    )
    endless = MaintenanceWindow("MW-ENDLESS", start, 1e300, recurrence="daily")
    yearly = MaintenanceWindow("MW-YEARLY", start, start + HOUR, recurrence="yearly")
    # a one-off window's zone does not matter: it still mutes
    once = MaintenanceWindow("MW-ONCE", start, start + HOUR, timezone="Nowhere/Atlantis")
    good = MaintenanceWindow("MW-GOOD", start, start + 2 * HOUR, recurrence="daily")
    for minute in range(0, 600, 10):  # sixty ticks
        now = start + minute * 60
        assert not is_active(nowhere, now)
        unusable = [nowhere, endless, yearly]
        assert in_maintenance(unusable, "contoso", "web-app", now) is None
        assert in_maintenance([*unusable, good], "contoso", "web-app", now) is (
            good if minute < 120 else None
        )
        assert is_active(once, now) is (minute < 60)
    for window in unusable:
        assert occurrences(window, start, start + 30 * DAY) == []
        assert skipped(caplog, window.id) == 1
    assert len(occurrences(good, start, start + 30 * DAY)) == 30
    assert occurrences(once, start, start + 30 * DAY) == [(start, start + HOUR)]
    assert skipped(caplog, "MW-GOOD") == skipped(caplog, "MW-ONCE") == 0


REPORT_CONFIG = """
escalation_policies:
  standard:
    steps: [{after: 0s, notify: [outbox]}]
incidents: {default_policy: standard, correlation: {enabled: false}, cooldown: 1s}
channels:
  outbox: {type: file, directory: outbox}
services:
  web-app:
    name: Web app
    checks: [{name: health, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [web-app]}
"""


async def test_an_old_window_with_an_unknown_zone_stops_nothing(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(REPORT_CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    start = local("2026-11-01 02:00")
    clock = FakeClock(start - DAY)
    try:
        # written before time zones were checked
        await store.add_maintenance(
            MaintenanceWindow(
                "MW-BEIJING",
                start,
                start + 2 * HOUR,
                customer="contoso",
                recurrence="daily",
                timezone="Asia/Beijing",
            ),
            clock.now,
        )
        manager = IncidentManager(
            store,
            TemplateRenderer(),
            LinkSigner(b"k" * 32),
            failing_checks=lambda c, s: [],
            wall=clock,
        )
        manager.configure(catalog)
        await manager.start(clock.now)
        key = ("contoso", "web-app")
        await manager.status_changed(*key, Status.UNKNOWN, Status.UP, "up", clock.now)
        clock.now = start + HOUR  # inside where the window would be
        await manager.status_changed(*key, Status.UP, Status.DOWN, "refused", clock.now)
        [incident] = manager.open_incidents()  # the change was not dropped
        assert not incident.muted
        for _ in range(3):
            clock.now += 60
            await manager.tick(clock.now)
        await manager.close(clock.now)
        period = parse_period("2026-11", "Asia/Shanghai")
        report = await build_report(store, catalog, period, now=clock.now)
        for fmt in ("json", "csv", "html"):
            render(report, fmt)
        [section] = report.customers
        assert section.maintenance == ()
        assert [i.id for i in section.incidents] == [incident.id]
    finally:
        await store.close()


# ----------------------------------------------------------------------------- the API


def write_daemon_config(path: Path, port: int) -> None:
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
defaults: {{interval: 1h, timeout: 1s}}
services:
  web-app:
    name: Customer web app
    checks: [{{name: port, type: tcp, host: 127.0.0.1, port: {port}}}]
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [web-app]}}
""")


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.yaml"
    write_daemon_config(config, web_target.port)
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def call(daemon: Daemon, method: str, path: str, body: Any = None) -> tuple[int, str, Any]:
    headers = {"Authorization": "Bearer noc-token"}
    url = f"http://127.0.0.1:{daemon.bound_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        text = await response.text()
        parsed = await response.json() if response.content_type == "application/json" else None
        return response.status, text, parsed


START = "2026-11-29T02:00:00+08:00"
BAD_BODIES: list[tuple[dict[str, Any], set[str], str]] = [
    ({"starts_at": START, "duration": "2h", "timezone": "Asia/Beijing"}, {"timezone"}, "Asia/"),
    ({"starts_at": START, "duration": "2h", "timezone": "Nowhere/Atlantis"}, {"timezone"}, ""),
    ({"starts_at": START, "duration": "2h", "timezone": {"a": 1}}, {"timezone"}, "string"),
    ({"starts_at": START, "duration": "2h", "timezone": None}, {"timezone"}, "string"),
    ({"starts_at": START, "duration": 1e300}, {"duration"}, "at most 31 days"),
    ({"starts_at": START, "duration": "40d"}, {"duration"}, "at most 31 days"),
    ({"starts_at": START, "duration": "25h", "recurrence": "daily"}, {"duration"}, "1 day"),
    ({"starts_at": START, "duration": "8d", "recurrence": "weekly"}, {"duration"}, "7 days"),
    ({"starts_at": START, "duration": "29d", "recurrence": "monthly"}, {"duration"}, "28 days"),
    ({"starts_at": START, "duration": -5}, {"duration"}, "positive"),
    ({"starts_at": START}, {"duration"}, "give duration"),
    ({"starts_at": START, "ends_at": "2026-11-29T01:00:00+08:00"}, {"ends_at"}, "after"),
    ({"starts_at": START, "ends_at": "2027-11-29T01:00:00+08:00"}, {"ends_at"}, "31 days"),
    ({"starts_at": 1e300, "duration": "2h"}, {"starts_at"}, "between 1970 and 9000"),
    ({"starts_at": "9999-12-31T23:00:00+00:00", "duration": "2h"}, {"starts_at"}, "9000"),
    ({"starts_at": "tomorrow", "duration": "2h"}, {"starts_at"}, "ISO 8601"),
    ({"starts_at": True, "duration": "2h"}, {"starts_at"}, "ISO 8601"),
    (
        {"starts_at": START, "duration": "2h", "customer": 7, "service": {"x": 1}, "reason": None},
        {"customer", "service", "reason"},
        "string",
    ),
    ({"starts_at": START, "duration": "2h", "reason": "x" * 1001}, {"reason"}, "1000"),
    ({"starts_at": START, "duration": "2h", "recurrence": "yearly"}, {"recurrence"}, "daily"),
    ({"starts_at": START, "duration": "2h", "colour": "red"}, {"colour"}, "unknown key"),
    ({"starts_at": START, "duration": "2h", "customer": "initech"}, {"customer"}, "initech"),
]


async def test_bad_windows_are_refused_naming_each_field_and_nothing_is_stored(
    daemon: Daemon,
) -> None:
    for body, fields, words in BAD_BODIES:
        status, text, document = await call(daemon, "POST", "/api/v1/maintenance", body)
        assert status == 400, (body, text)
        assert document is not None, text
        assert {error["field"] for error in document["errors"]} == fields, (body, document)
        assert words in document["message"], (body, document)
    status, text, listed = await call(daemon, "GET", "/api/v1/maintenance")
    assert (status, listed) == (200, {"maintenance": []}), text
    store = daemon.alerting.store
    assert store is not None and await store.list_maintenance() == []
    status, text, _ = await call(daemon, "GET", "/api/v1/reports/uptime?period=2026-11")
    assert status == 200, text


async def test_a_good_window_is_created_with_its_zone(daemon: Daemon) -> None:
    body = {
        "starts_at": START,
        "duration": "7d",
        "recurrence": "weekly",
        "timezone": "Europe/Berlin",
        "customer": "contoso",
        "reason": "patching",
    }
    status, text, created = await call(daemon, "POST", "/api/v1/maintenance", body)
    assert status == 201, text
    assert created["timezone"] == "Europe/Berlin"
    assert created["ends_at"] == "2026-12-05T18:00:00+00:00"
    status, _, listed = await call(daemon, "GET", "/api/v1/maintenance")
    assert [w["id"] for w in listed["maintenance"]] == [created["id"]]


async def test_windows_stored_before_they_were_checked_break_nothing(daemon: Daemon) -> None:
    manager = daemon.alerting.manager
    assert manager is not None
    start = daemon.wall() - HOUR
    for window in (
        MaintenanceWindow("MW-FOREVER", start, 1e300, customer="contoso"),
        MaintenanceWindow(
            "MW-BEIJING", start, start + 2 * HOUR, recurrence="daily", timezone="Asia/Beijing"
        ),
    ):
        await manager.add_maintenance(window)  # as the API stored them before
    await manager.tick()
    status, text, listed = await call(daemon, "GET", "/api/v1/maintenance")
    assert status == 200, text
    assert [(w["id"], w["ends_at"]) for w in listed["maintenance"]] == [
        ("MW-FOREVER", None),
        ("MW-BEIJING", datetime.fromtimestamp(start + 2 * HOUR, UTC).isoformat()),
    ]
    month = datetime.fromtimestamp(start, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    for fmt in ("json", "csv", "html"):
        path = f"/api/v1/reports/uptime?period={month}&format={fmt}"
        status, text, _ = await call(daemon, "GET", path)
        assert status == 200, text
    for window_id in ("MW-FOREVER", "MW-BEIJING"):
        status, text, _ = await call(daemon, "DELETE", f"/api/v1/maintenance/{window_id}")
        assert status == 200, text


# ----------------------------------------------------------------------------- the CLI


def test_cli_refuses_a_bad_window_before_sending_it(capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"http://127.0.0.1:{unused_port()}"
    for options, words in (
        (["--timezone", "Asia/Beijing"], "--timezone: unknown time zone 'Asia/Beijing'"),
        (["--duration", "1e300"], "--duration: invalid duration"),
        (["--duration", "8d", "--recurrence", "weekly"], "--duration: a weekly window"),
        (["--start", "2026-11-29T02:00"], "--start: give a time zone offset"),
        (["--reason", "x" * 1001], "--reason: String should have at most 1000"),
    ):
        arguments = {"--start": START, "--duration": "2h"}
        arguments.update(dict(zip(options[::2], options[1::2], strict=True)))
        argv = ["maintenance", "add", "--url", nobody]
        for name, value in arguments.items():
            argv += [name, value]
        assert main(argv) == 2, options
        err = capsys.readouterr().err
        assert words in err, err
        assert "cannot reach" not in err  # nothing was sent


def test_the_scenario_file_names_a_known_zone(tmp_path: Path) -> None:
    from monitor.config import ConfigError
    from monitor.simulate import load_scenario

    path = tmp_path / "scenario.yaml"
    path.write_text("timezone: Asia/Shangai\nevents: [{at: 1m, resolve: contoso/web-app}]\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert "timezone: unknown time zone 'Asia/Shangai' (nearest: Asia/Shanghai" in str(caught.value)
