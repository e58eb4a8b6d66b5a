"""The monthly service report each customer reads, against the auditor's report.

The month of tests/test_reports.py (October 2026, every figure worked out by hand
there), a September before it with one hour of Exchange Online down, an internal
note and a public customer update on the first incident. Contoso (康索科技) has
two contacts who receive reports and one who does not.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from monitor.catalog import Catalog, load_catalog
from monitor.channels.email import build_mail
from monitor.cli import main
from monitor.customer_reports import due_period, first_working_day
from monitor.housekeeping import Housekeeping
from monitor.reports.build import build_report
from monitor.reports.customer import customer_report_in_worker
from monitor.reports.customer_render import customer_rendered
from monitor.reports.model import parse_period
from monitor.reports.render import to_json
from monitor.store import Store
from tests.conftest import FakeClock, started_manager
from tests.test_reports import CONFIG, PERIOD, T, live_the_month

ZONE = ZoneInfo("Asia/Shanghai")
INTERNAL = "internal: the on-call engineer forgot the VPN token"
PUBLIC = "21Vianet restored the mail front-end servers; mail sent meanwhile was delivered."
CUSTOMER_CONFIG = (
    CONFIG.replace(
        "  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn, tier: gold,",
        "  - {id: contoso, name: 康索科技 Contoso, tenant_domain: contoso.partner.onmschina.cn,"
        " tier: gold,\n"
        "     contacts: [{name: 王芳, email: wang.fang@contoso.cn, reports: true},\n"
        "                {name: Li Lei, email: it@contoso.cn, reports: true},\n"
        "                {name: Zhang Wei, email: cfo@contoso.cn}],",
    )
    + """
channels:
  customers: {type: file, directory: customer-mail}
reports:
  customer_monthly: {enabled: true, channel: customers, holidays: [2026-11-02]}
"""
)


def beijing(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


async def live_september_and_october(store: Store, catalog: Catalog) -> str:
    """Returns the id of October's first incident (the one with a note and an update)."""
    september = beijing("2026-09-01 00:00")
    exchange = ("contoso", "exchange-online")
    await store.record_statuses([(*key, "up", september) for key in catalog.subscriptions])
    await store.record_status(*exchange, "down", beijing("2026-09-10 10:00"))
    await store.record_status(*exchange, "up", beijing("2026-09-10 11:00"))
    await store.close_all_open(T)
    await live_the_month(store, catalog)
    clock = FakeClock(T + 86400 * 31)
    manager = await started_manager(store, catalog, clock)
    try:
        first = (await store.list_incidents(customer="contoso", since=T, until=PERIOD.end))[-1]
        assert first.opened_at == T + 1000 * 60
        await manager.add_note(first.id, "li.wei", INTERNAL, T + 1030 * 60)
        await manager.add_customer_update(first.id, "li.wei", "identified", PUBLIC, T + 1095 * 60)
    finally:
        await manager.close(clock.now)
    return first.id


@pytest.fixture
async def month(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CUSTOMER_CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"a" * 32)
    try:
        await live_september_and_october(store, catalog)
        yield store, catalog
    finally:
        await store.close()


def row(html: str, service: str) -> str:
    """The first table row of ``service`` (the availability table)."""
    return html.split(f'<tr data-service="{service}">', 1)[1].split("</tr>", 1)[0]


async def test_the_customer_report_has_the_auditors_figures_and_no_internal_note(
    month: tuple[Store, Catalog],
) -> None:
    store, catalog = month
    now = T + 50000 * 60
    auditor = json.loads(to_json(await build_report(store, catalog, PERIOD, now=now)))
    html, text, pdf = await customer_report_in_worker(
        store, catalog, PERIOD, "contoso", customer_rendered, now=now
    )
    [contoso] = [c for c in auditor["customers"] if c["id"] == "contoso"]
    verdicts = {"met": "达标 met", "missed": "未达标 missed"}
    for item in contoso["subscriptions"]:
        line = row(html, item["service"])
        assert f"{item['sla_availability_ratio'] * 100:.3f} %" in line
        assert f"{item['sla_target_percent']:.3f} %" in line
        assert verdicts[item["sla_verdict"]] in line
        assert f">{round(item['downtime_minutes'])} 分钟 min<" in line
    assert "99.798 %" in row(html, "exchange-online")  # the hand-computed figure
    # only Contoso's services; its four incidents, in plain words
    assert "Fabrikam" not in html
    assert html.count('class="story"') == len(contoso["incidents"]) == 4
    assert '无法使用 <span class="en">was unavailable</span>' in html
    assert "访问缓慢或部分功能异常" in html  # the degraded hour
    assert "App Service plan upgrade" in html  # its maintenance
    # September: one hour down of 43,200 minutes, as the auditor's report of September has it
    previous = parse_period("2026-09", PERIOD.timezone)
    september = json.loads(
        to_json(await build_report(store, catalog, previous, now=now, customer="contoso"))
    )
    exchange_september = september["customers"][0]["subscriptions"][0]["sla_availability_ratio"]
    assert exchange_september == round(1 - 60 / 43200, 6)
    trend = html.split("<h2>趋势")[1].split("</table>")[0]
    assert f"{exchange_september * 100:.3f} %" in row(trend, "exchange-online")
    assert "↓ 低于前三个月" in row(trend, "exchange-online")

    # the public update is there, the internal note and who acknowledged are not
    pages = PdfReader(io.BytesIO(pdf)).pages
    pdf_text = re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in pages))
    for document in (html, text, pdf_text):
        assert INTERNAL not in document and "VPN token" not in document
        assert "li.wei" not in document and "wang.fang@" not in document
    assert PUBLIC in html and "21Vianet restored the mail front-end" in pdf_text
    assert "康索科技 Contoso" in pdf_text and "月度服务报告" in pdf_text
    assert f"Page 1 of {len(pages)}" in pdf_text and "Audit chain head" in pdf_text
    assert "未达标 missed" in text


def test_the_first_working_day_in_beijing() -> None:
    assert first_working_day(2026, 11) == date(2026, 11, 2)  # the 1st is a Sunday
    assert first_working_day(2026, 11, holidays=[date(2026, 11, 2)]) == date(2026, 11, 3)
    # October: the national holiday, and a Saturday that is a make-up working day
    holidays = [date(2026, 10, day) for day in range(1, 9)]
    assert first_working_day(2026, 10, holidays) == date(2026, 10, 9)
    assert first_working_day(2026, 10, holidays, [date(2026, 10, 10)]) == date(2026, 10, 9)
    assert first_working_day(2026, 8, (), [date(2026, 8, 1)]) == date(2026, 8, 1)


async def test_each_customer_report_is_queued_once_across_a_restart(
    tmp_path: Path, month: tuple[Store, Catalog]
) -> None:
    store, catalog = month
    woken: list[int] = []

    def housekeeping(at: str) -> Housekeeping:
        built = Housekeeping(
            store, lambda *a: None, lambda: woken.append(1), tmp_path, wall=lambda: beijing(at)
        )
        built.configure(catalog)
        return built

    # 2 November (Monday) is a holiday in this config: the first working day is the 3rd
    assert await housekeeping("2026-11-02 10:00").customer_reports() == 0
    assert await housekeeping("2026-11-03 08:59").customer_reports() == 0
    assert due_period(catalog, beijing("2026-11-03 09:00")) is not None
    first = housekeeping("2026-11-03 09:30")
    assert await first.customer_reports() == 2  # two contacts with reports: true
    assert woken
    assert await first.customer_reports() == 0  # the next hourly run
    restarted = housekeeping("2026-11-03 10:30")  # a new daemon on the same store
    assert await restarted.customer_reports() == 0
    rows = [r for r in await store.list_outbox() if r.message.event == "customer_report"]
    assert sorted(r.dedup_key for r in rows) == [
        "customer-report:2026-10:contoso:it@contoso.cn",
        "customer-report:2026-10:contoso:wang.fang@contoso.cn",
    ]
    message = rows[0].message
    assert message.channel == "customers" and message.recipients[0].endswith("@contoso.cn")
    assert message.subject == "康索科技 Contoso 月度服务报告 Monthly service report 2026-10"
    assert INTERNAL not in message.text and INTERNAL not in (message.html or "")
    [(name, kind, _)] = message.attachments
    assert (name, kind) == ("service-report-2026-10-contoso.pdf", "application/pdf")
    mail = build_mail(message, "noc@partner.cn", message.recipients)  # as the channel sends it
    [attached] = list(mail.iter_attachments())
    assert attached.get_filename() == "service-report-2026-10-contoso.pdf"
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content().startswith(b"%PDF-")
    # a daemon that was down on the 3rd catches up when it starts; a week on it stops
    assert due_period(catalog, beijing("2026-11-05 08:00")) is not None
    assert due_period(catalog, beijing("2026-11-10 09:30")) is None


def test_an_operator_previews_the_customer_report(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CUSTOMER_CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    from monitor.alerting import audit_key, store_url

    async def prepare() -> None:
        store = await Store.open(
            store_url(catalog, tmp_path), audit_key=audit_key(catalog, tmp_path)
        )
        try:
            await live_september_and_october(store, catalog)
        finally:
            await store.close()

    asyncio.run(prepare())
    config = ["--config", str(tmp_path / "config.yaml")]
    output = tmp_path / "preview.html"
    base = ["report", "--customer", "contoso", "--audience", "customer", "--period", "2026-10"]
    assert main([*base, "--format", "html", "-o", str(output), *config]) == 0
    html = output.read_text(encoding="utf-8")
    assert "康索科技 Contoso" in html and PUBLIC in html and INTERNAL not in html
    assert main(["report", "--audience", "customer", "--period", "2026-10", *config]) == 2
    assert main([*base, "--format", "csv", *config]) == 2


def test_a_broken_customer_report_template_is_named_by_validate(tmp_path: Path) -> None:
    from monitor.reports.render import check_templates

    (tmp_path / "config.yaml").write_text(CUSTOMER_CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    assert check_templates(catalog) == []
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "customer.txt.j2").write_text("{{ c.name }}\n{{ c.no_such_thing.x }}\n")
    problems = [str(p) for p in check_templates(catalog, [tmp_path])]
    assert len(problems) == 1 and "report/customer.txt.j2:2" in problems[0], problems
