"""The customer's monthly service report as HTML (and PDF from it) and plain text.

Templates ``report/customer.html.j2`` and ``report/customer.txt.j2``, zh-CN and
English side by side, in the same sandbox as the auditor's report; an operator's
templates directory may override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment

from monitor import __version__
from monitor.reports.customer import CustomerReport
from monitor.reports.pdf import html_to_pdf
from monitor.reports.render import report_environment

VERDICTS = {
    "met": ("达标", "met"),
    "missed": ("未达标", "missed"),
    "not determinable": ("无法判定", "not determinable"),
    None: ("无合同目标", "no contractual target"),
}
TRENDS = {
    "better": ("↑ 好于前三个月", "better than the previous three months"),
    "worse": ("↓ 低于前三个月", "below the previous three months"),
    "steady": ("→ 与前三个月持平", "the same as the previous three months"),
    "none": ("—", "no comparison"),
}


def _context(report: CustomerReport) -> dict[str, Any]:
    zone = ZoneInfo(report.period.timezone)

    def local(value: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "—" if value is None else datetime.fromtimestamp(value, zone).strftime(fmt)

    return {
        "r": report,
        "report": report.report,
        "c": report.section,
        "local": local,
        "verdicts": VERDICTS,
        "trends": TRENDS,
        "version": __version__,
        "service_names": {s.service: s.name for s in report.services},
    }


def _html(report: CustomerReport, environment: Environment) -> str:
    return environment.get_template("customer.html.j2").render(_context(report))


def _text(report: CustomerReport, environment: Environment) -> str:
    return environment.get_template("customer.txt.j2").render(_context(report))


def customer_html(report: CustomerReport, directories: Sequence[Path] = ()) -> str:
    return _html(report, report_environment(directories))


def customer_text(report: CustomerReport, directories: Sequence[Path] = ()) -> str:
    return _text(report, report_environment(directories))


def customer_rendered(
    report: CustomerReport, directories: Sequence[Path] = ()
) -> tuple[str, str, bytes]:
    """(HTML, text, PDF): what the monthly e-mail carries."""
    environment = report_environment(directories)
    html = _html(report, environment)
    return html, _text(report, environment), html_to_pdf(html)


def render_customer(
    report: CustomerReport, fmt: str, directories: Sequence[Path] = ()
) -> str | bytes:
    """The preview an operator asks for: html, pdf or text."""
    if fmt == "html":
        return customer_html(report, directories)
    if fmt == "pdf":
        return html_to_pdf(customer_html(report, directories))
    if fmt == "text":
        return customer_text(report, directories)
    raise ValueError(f"a customer report is html, pdf or text, not {fmt!r}")
