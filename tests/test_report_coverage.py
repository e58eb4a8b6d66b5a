"""A verdict needs coverage, in every format (HTML, CSV, JSON, PDF), and the PDF is the
auditor's document: A4 pages, page numbers and the evidence on every page's footer,
Chinese that renders.

October 2026 in Beijing time; 康索科技 (Contoso) has two subscriptions: Exchange
Online was measured for the first 40 % of the month only (the monitor was then
stopped), the web app for all of it. Both were up whenever measured.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from monitor.catalog import Catalog, load_catalog
from monitor.reports.build import build_report
from monitor.reports.model import Report, parse_period
from monitor.reports.render import render, to_csv, to_html, to_json
from monitor.store import Store

CONFIG = """
services:
  exchange-online:
    name: Exchange Online
    sla_target: 99.9
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
  web-app:
    name: Web app
    sla_target: 99.9
    checks: [{name: health, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: 康索科技 Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online, web-app]}
  - {id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     subscriptions: [web-app]}
"""
PERIOD = parse_period("2026-10", "Asia/Shanghai")
T = PERIOD.start
LENGTH = PERIOD.end - PERIOD.start


@pytest.fixture
async def report(tmp_path: Path) -> AsyncIterator[tuple[Report, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"a" * 32)
    try:
        await store.record_statuses(
            [(c, s, "up", T) for c, s in catalog.subscriptions]  # every subscription up
        )
        await store.close_all_open(T + 0.4 * LENGTH, [("contoso", "exchange-online")])
        await store.close_all_open(PERIOD.end)
        yield await build_report(store, catalog, PERIOD, now=PERIOD.end + 86400), catalog
    finally:
        await store.close()


async def test_forty_percent_coverage_is_not_determinable_in_every_format(
    report: tuple[Report, Catalog],
) -> None:
    built, _ = report
    document = json.loads(to_json(built))
    contoso = document["customers"][0]
    exchange, web = contoso["subscriptions"]
    assert exchange["coverage_ratio"] == pytest.approx(0.4)
    assert exchange["sla_availability_ratio"] == 1.0  # all it measured was up ...
    assert exchange["sla_verdict"] == "not determinable"  # ... but that is no verdict
    assert exchange["sla_met"] is None
    assert web["sla_verdict"] == "met" and web["sla_met"] is True
    assert (contoso["sla_met"], contoso["sla_not_determinable"]) == (1, 1)
    assert contoso["coverage_ratio"] == pytest.approx(0.7)

    rows = list(csv.DictReader(io.StringIO(to_csv(built))))
    [row] = [r for r in rows if r["service"] == "exchange-online"]
    assert row["sla_verdict"] == "not determinable" and row["sla_met"] == ""
    assert float(row["coverage_percent"]) == 40.0

    html = to_html(built)
    assert "not determinable (coverage 40.00 %)" in html
    summary = html.split("<h3>Summary</h3>")[1].split("</table>")[0]
    contoso_row = summary.split("康索科技 Contoso")[1].split("</tr>")[0]
    assert "1 / 2" in contoso_row and "1 not determinable" in contoso_row
    assert "70.00 %" in contoso_row  # the customer's coverage, next to "SLA met"
    assert "how coverage" not in html  # (the definitions say it in their own words:)
    assert "counted neither as up nor as down" in html

    pdf = PdfReader(io.BytesIO(render(built, "pdf")[1]))  # type: ignore[arg-type]
    text = re.sub(r"\s+", " ", "\n".join(page.extract_text() for page in pdf.pages))
    assert "not determinable (coverage 40.00 %)" in text
    assert "(missed)" not in text


async def test_the_pdf_has_a4_pages_numbered_with_the_evidence_in_every_footer(
    report: tuple[Report, Catalog],
) -> None:
    built, catalog = report
    content_type, body = render(built, "pdf")
    assert content_type == "application/pdf" and isinstance(body, bytes)
    pages = PdfReader(io.BytesIO(body)).pages
    assert len(pages) == 3  # the summary, then one page per customer
    seq, digest = built.audit_head
    for number, page in enumerate(pages, 1):
        assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (
            595,
            842,
        )  # A4 in points
        text = re.sub(r"\s+", " ", page.extract_text())
        assert f"Page {number} of 3" in text
        assert f"Audit chain head {seq}:{digest}" in text
        assert f"config digest {catalog.digest}" in text
        assert "generated 2026-11-02 00:00:00 Asia/Shanghai" in text
    assert "康索科技 Contoso" in pages[1].extract_text()
    # ... drawn with a font that has Chinese glyphs (not boxes): one installed from Debian's
    # fonts-wqy-zenhei or fonts-noto-cjk (.ci/setup installs one)
    fonts = pages[1]["/Resources"]["/Font"]
    names = [str(fonts[key].get_object()["/BaseFont"]) for key in fonts]
    assert any("WenQuanYi" in name or "CJK" in name for name in names), names
