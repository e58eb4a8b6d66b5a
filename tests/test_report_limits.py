"""Report periods and the cost of a report: bounded, and composed off the event loop.

A period is a month or a range of at most 400 days between 1970 and 8999;
anything else is a 400 from the API and exit status 2 from the CLI, never a
500 or a traceback. Composing and rendering run in a worker thread: while they
do, other tasks on the daemon's loop (probes) go on.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pytest

from monitor.api import reports as api_reports
from monitor.catalog import load_catalog
from monitor.cli import main
from monitor.daemon import Daemon
from monitor.engine.model import MaintenanceWindow
from monitor.reports import build
from monitor.reports.build import build_report
from monitor.reports.model import parse_period
from monitor.reports.render import render, render_chunks
from monitor.store import Store
from tests.test_maintenance import REPORT_CONFIG, call, daemon, local

__all__ = ["daemon"]  # the fixture, shared with the maintenance API tests
T = TypeVar("T")


class LoopWitness:
    """Wraps a function so that, once called, it waits for a task on the event loop to
    run. On the loop's own thread that task could not run: the wait would time out
    (the timeout only keeps a failing test from hanging) and ``progressed`` says so."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.loop_ran = threading.Event()
        self.progressed: list[bool] = []

    def wrap(self, function: Callable[..., T]) -> Callable[..., T]:
        def waiting(*args: Any, **kwargs: Any) -> T:
            self.called.set()
            self.progressed.append(self.loop_ran.wait(timeout=10))
            return function(*args, **kwargs)

        return waiting

    async def watch(self) -> None:
        for _ in range(3000):  # bounded: 30 s at most
            if self.called.is_set():
                self.loop_ran.set()
                return
            await asyncio.sleep(0.01)


async def test_a_report_is_composed_while_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text(REPORT_CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    start = local("2026-01-01 02:00")
    await store.add_maintenance(
        MaintenanceWindow("MW-DAILY", start, start + 3600, recurrence="daily"), start
    )
    witness = LoopWitness()
    monkeypatch.setattr(build, "compose", witness.wrap(build.compose))
    try:
        period = parse_period("2026-01-01..2027-02-04", "Asia/Shanghai")
        watcher = asyncio.create_task(witness.watch())
        report = await build_report(store, catalog, period, now=start + 500 * 86400)
        await watcher
    finally:
        await store.close()
    assert witness.progressed == [True]
    [section] = report.customers
    [daily] = section.maintenance
    assert len(daily.occurrences) == 400


async def test_the_api_renders_a_report_while_the_loop_goes_on(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = LoopWitness()
    monkeypatch.setattr(api_reports, "render_chunks", witness.wrap(api_reports.render_chunks))
    watcher = asyncio.create_task(witness.watch())
    status, text, _ = await call(daemon, "GET", "/api/v1/reports/uptime?period=2026-10&format=html")
    await watcher
    assert status == 200, text
    assert witness.progressed == [True]


@pytest.mark.parametrize(
    ("period", "words"),
    [
        ("0001-01", "years 1970 to 8999"),
        ("9999-12", "years 1970 to 8999"),
        ("0001-01-01..9999-12-31", "years 1970 to 8999"),
        ("2026-01-01..2027-02-05", "at most 400 days"),
        ("2026-10-15..2026-10-01", "ends before it starts"),
        ("garbage", "use 2026-10"),
        ("2026-13", "month out of range"),
        ("", "use 2026-10"),
    ],
)
async def test_report_periods_out_of_bounds_are_400(
    daemon: Daemon, period: str, words: str
) -> None:
    status, text, _ = await call(daemon, "GET", f"/api/v1/reports/uptime?period={period}")
    assert status == 400 and words in text, (period, text)


async def test_a_report_of_400_days_and_the_first_and_last_months_are_served(
    daemon: Daemon,
) -> None:
    for period in ("2026-01-01..2027-02-04", "1970-01", "8999-12"):
        for fmt in ("json", "csv", "html"):
            path = f"/api/v1/reports/uptime?period={period}&format={fmt}"
            status, text, _ = await call(daemon, "GET", path)
            assert status == 200, (period, fmt, text[:500])


def test_cli_report_refuses_periods_it_cannot_cover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text(REPORT_CONFIG)
    config = str(tmp_path / "config.yaml")
    for period, words in (
        ("0001-01-01..9999-12-31", "reports cover the years 1970 to 8999"),
        ("9999-12", "reports cover the years 1970 to 8999"),
        ("2025-01-01..2026-12-31", "730 days: a report covers at most 400 days"),
        ("soon", "invalid period 'soon'"),
    ):
        assert main(["report", "--period", period, "--config", config]) == 2, period
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err


def test_months_of_a_year() -> None:
    """A month period is the calendar month in the report's zone, as before."""
    period = parse_period("2026-02", "Asia/Shanghai")
    assert (period.start, period.end) == (local("2026-02-01 00:00"), local("2026-03-01 00:00"))
    assert len(period.days()) == 28
    assert date(2026, 2, 28) == period.days()[-1][0]


async def test_the_chunks_the_api_sends_are_the_report(tmp_path: Path) -> None:
    config = REPORT_CONFIG.replace(
        "     subscriptions: [web-app]}",
        "     subscriptions: [web-app]}\n"
        "  - {id: fabrikam, name: 法布里坎, tenant_domain: fabrikam.partner.onmschina.cn,\n"
        "     subscriptions: [web-app]}",
    )
    (tmp_path / "config.yaml").write_text(config)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    start = local("2026-10-01 00:00")
    try:
        await store.record_statuses(
            [
                ("contoso", "web-app", "up", start),
                ("fabrikam", "web-app", "up", start),
                ("contoso", "web-app", "down", start + 86400),
                ("contoso", "web-app", "up", start + 90000),
            ]
        )
        await store.add_maintenance(
            MaintenanceWindow("MW-W", start, start + 3600, recurrence="weekly"), start
        )
        period = parse_period("2026-10", "Asia/Shanghai")
        report = await build_report(store, catalog, period, now=start + 40 * 86400)
    finally:
        await store.close()
    assert [len(section.maintenance) for section in report.customers] == [1, 1]
    for fmt in ("json", "csv", "html"):
        content_type, chunks = render_chunks(report, fmt)
        assert (content_type, b"".join(chunks).decode()) == render(report, fmt), fmt
    assert json.loads(render(report, "json")[1])["customers"][1]["name"] == "法布里坎"


async def test_the_api_gives_a_pdf(daemon: Daemon) -> None:
    import io

    import aiohttp
    from pypdf import PdfReader

    url = f"http://127.0.0.1:{daemon.bound_port}/api/v1/reports/uptime?period=2026-10&format=pdf"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": "Bearer noc-token"}) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/pdf"
        assert 'filename="uptime-2026-10-all.pdf"' in response.headers["Content-Disposition"]
        body = await response.read()
    text = PdfReader(io.BytesIO(body)).pages[0].extract_text()
    assert "Uptime and SLA report — 2026-10" in text and "Page 1 of" in text


def test_the_cli_writes_a_pdf(tmp_path: Path) -> None:
    from pypdf import PdfReader

    (tmp_path / "config.yaml").write_text(REPORT_CONFIG)
    output = tmp_path / "october.pdf"
    config = str(tmp_path / "config.yaml")
    args = ["report", "--period", "2026-10", "--format", "pdf", "-o", str(output)]
    assert main([*args, "--config", config]) == 0
    assert output.read_bytes().startswith(b"%PDF-")
    assert "Audit chain head" in PdfReader(output).pages[0].extract_text()
