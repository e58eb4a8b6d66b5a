"""Reports as JSON (every figure and the raw intervals), CSV and printable HTML."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, select_autoescape

from monitor import __version__
from monitor.catalog import Catalog
from monitor.notify.templates import (
    BUILTIN_TEMPLATES,
    TemplateProblem,
    sandboxed_environment,
    template_problem,
)
from monitor.reports.locations import LocationFigures
from monitor.reports.model import (
    CustomerSection,
    Report,
    SubscriptionFigures,
    compose,
    month_of,
)
from monitor.reports.pdf import PDF_TYPE, html_to_pdf
from monitor.sla import STATUSES, IncidentTimes, ResponseStats


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 2)


def _subscription_json(item: SubscriptionFigures, by_location: bool) -> dict[str, Any]:
    a = item.availability
    document = {
        "service": item.service,
        "service_name": item.service_name,
        "sla_target_percent": a.target,
        "degraded_counts_as_down": a.degraded_is_down,
        "minutes": {status: _minutes(a.seconds[status]) for status in STATUSES},
        "measured_minutes": _minutes(a.measured),
        "downtime_minutes": _minutes(a.downtime),
        "coverage_ratio": _round(a.coverage),
        "raw_availability_ratio": _round(a.raw_availability),
        "sla_availability_ratio": _round(a.sla_availability),
        "sla_met": a.met,
        "sla_verdict": a.verdict,
        "downtime_budget_minutes": _minutes(a.budget_seconds),
        "downtime_budget_left_minutes": _minutes(a.budget_left_seconds),
        "coverage_gaps": [
            {"start": _iso(g.start), "end": _iso(g.end), "minutes": _minutes(g.seconds)}
            for g in a.gaps
        ],
        "daily": [
            {
                "day": d.day.isoformat(),
                "sla_availability_ratio": _round(d.sla_availability),
                "coverage_ratio": _round(d.coverage),
                "downtime_minutes": _minutes(d.downtime),
            }
            for d in item.daily
        ],
        "status_intervals": [
            {"status": i.status, "start": i.start, "end": i.end} for i in item.intervals
        ],
    }
    if by_location:  # only then: reports without locations stay as they were
        document["locations"] = [_location_json(f) for f in item.locations]
    return document


def _location_json(figures: LocationFigures) -> dict[str, Any]:
    a = figures.availability
    return {
        "check": figures.check,
        "target_id": figures.target_id,
        "location": figures.location,
        "minutes": {status: _minutes(a.seconds[status]) for status in STATUSES},
        "measured_minutes": _minutes(a.measured),
        "downtime_minutes": _minutes(a.downtime),
        "coverage_ratio": _round(a.coverage),
        "sla_availability_ratio": _round(a.sla_availability),
        "sla_verdict": a.verdict,
    }


def _incident_json(item: IncidentTimes) -> dict[str, Any]:
    return {
        "id": item.id,
        "customer": item.customer,
        "service": item.service,
        "severity": item.severity,
        "detected": _iso(item.opened_at),
        "acknowledged": _iso(item.acknowledged_at),
        "acknowledged_by": item.acknowledged_by,
        "escalations": [_iso(at) for at in item.escalations],
        "vendor_case": item.vendor_case,
        "vendor_case_recorded": _iso(item.vendor_case_at),
        "resolved": _iso(item.resolved_at),
        "time_to_acknowledge_minutes": _minutes(item.time_to_acknowledge),
        "time_to_resolve_minutes": _minutes(item.time_to_resolve),
    }


def _stats_json(stats: ResponseStats) -> dict[str, Any]:
    return {
        "incidents": stats.incidents,
        "acknowledged": stats.acknowledged,
        "resolved": stats.resolved,
        "mtta_minutes": _minutes(stats.mtta),
        "mttr_minutes": _minutes(stats.mttr),
        "breaching_response_policy": list(stats.breaches),
    }


def json_parts(report: Report) -> Iterator[str]:
    """The JSON report in pieces: the head, then one customer at a time."""
    document = {
        "report": "csp-monitor uptime and SLA report",
        "version": __version__,
        "parameters": dict(report.parameters),
        "period": {
            "label": report.period.label,
            "start": _iso(report.period.start),
            "end": _iso(report.period.end),
            "timezone": report.period.timezone,
        },
        "generated_at": _iso(report.generated_at),
        "evidence": {
            "audit_chain_head_seq": report.audit_head[0],
            "audit_chain_head_hash": report.audit_head[1],
            "config_digest": report.config_digest,
        },
        "definitions": definitions(report),
        "overall": _stats_json(report.overall),
        "vendor_side_incidents": [_incident_json(i) for i in report.vendor_incidents],
        "customers": [],  # last: each customer is added as it is rendered
    }
    head = json.dumps(document, indent=2, ensure_ascii=False)
    if not report.customers:
        yield head
        return
    # One customer at a time: a year for thousands of customers would otherwise be one
    # document of millions of objects, and one string of hundreds of megabytes whose
    # every copy holds the interpreter lock. JSON strings hold no raw newline, so
    # indenting each line places the customer in the list.
    yield head.removesuffix("[]\n}") + "[\n    "
    for number, c in enumerate(report.customers):
        text = json.dumps(_customer_json(c, report.by_location), indent=2, ensure_ascii=False)
        yield (",\n    " if number else "") + text.replace("\n", "\n    ")
    yield "\n  ]\n}"


def to_json(report: Report) -> str:
    return "".join(json_parts(report))


def _customer_json(c: CustomerSection, by_location: bool) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "tenant_domain": c.tenant_domain,
        "tier": c.tier,
        "response_policy": {
            "ack_within_minutes": _minutes(c.ack_within),
            "resolve_within_minutes": _minutes(c.resolve_within),
        },
        "response": _stats_json(c.response),
        "coverage_ratio": _round(c.coverage),
        "sla_met": c.count("met"),
        "sla_missed": c.count("missed"),
        "sla_not_determinable": c.count("not determinable"),
        "subscriptions": [_subscription_json(s, by_location) for s in c.subscriptions],
        "incidents": [_incident_json(i) for i in c.incidents],
        "maintenance_windows": [
            {
                "id": m.window.id,
                "service": m.window.service,
                "starts_at": _iso(m.window.starts_at),
                "ends_at": _iso(m.window.ends_at),
                "recurrence": m.window.recurrence,
                "timezone": m.window.timezone,
                "reason": m.window.reason,
                "created_by": m.window.created_by,
                "occurrences_in_period": [[_iso(b), _iso(e)] for b, e in m.occurrences],
                "minutes_in_period": _minutes(m.seconds),
            }
            for m in c.maintenance
        ],
    }


_CSV_COLUMNS = (
    "record",
    "period",
    "customer",
    "customer_name",
    "service",
    "service_name",
    "sla_target_percent",
    "up_minutes",
    "degraded_minutes",
    "down_minutes",
    "maintenance_minutes",
    "unknown_minutes",
    "measured_minutes",
    "downtime_minutes",
    "coverage_percent",
    "raw_availability_percent",
    "sla_availability_percent",
    "sla_met",
    "sla_verdict",
    "downtime_budget_minutes",
    "downtime_budget_left_minutes",
    "incident",
    "severity",
    "detected",
    "acknowledged",
    "acknowledged_by",
    "escalations",
    "vendor_case",
    "resolved",
    "time_to_acknowledge_minutes",
    "time_to_resolve_minutes",
    "breaches_response_policy",
    "mtta_minutes",
    "mttr_minutes",
)
# appended, for location rows, only to the reports of configs with locations
_CSV_LOCATION_COLUMNS = ("check", "location")


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio * 100, 4)


def to_csv(report: Report) -> str:
    out = io.StringIO()
    columns = _CSV_COLUMNS + (_CSV_LOCATION_COLUMNS if report.by_location else ())
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="raise")
    writer.writeheader()
    for customer in report.customers:
        base = {
            "period": report.period.label,
            "customer": customer.id,
            "customer_name": customer.name,
        }
        for item in customer.subscriptions:
            a = item.availability
            writer.writerow(
                {
                    **base,
                    "record": "subscription",
                    "service": item.service,
                    "service_name": item.service_name,
                    "sla_target_percent": a.target,
                    **{f"{s}_minutes": _minutes(a.seconds[s]) for s in STATUSES},
                    "measured_minutes": _minutes(a.measured),
                    "downtime_minutes": _minutes(a.downtime),
                    "coverage_percent": _percent(a.coverage),
                    "raw_availability_percent": _percent(a.raw_availability),
                    "sla_availability_percent": _percent(a.sla_availability),
                    "sla_met": a.met,
                    "sla_verdict": a.verdict,
                    "downtime_budget_minutes": _minutes(a.budget_seconds),
                    "downtime_budget_left_minutes": _minutes(a.budget_left_seconds),
                }
            )
            for figures in item.locations:  # after its subscription's row
                writer.writerow(
                    {
                        **base,
                        **_location_row(figures),
                        "service": item.service,
                        "service_name": item.service_name,
                    }
                )
        for incident in customer.incidents:
            writer.writerow(
                {
                    **base,
                    "record": "incident",
                    "service": incident.service,
                    "incident": incident.id,
                    "severity": incident.severity,
                    "detected": _iso(incident.opened_at),
                    "acknowledged": _iso(incident.acknowledged_at),
                    "acknowledged_by": incident.acknowledged_by,
                    "escalations": " ".join(_iso(t) or "" for t in incident.escalations),
                    "vendor_case": incident.vendor_case,
                    "resolved": _iso(incident.resolved_at),
                    "time_to_acknowledge_minutes": _minutes(incident.time_to_acknowledge),
                    "time_to_resolve_minutes": _minutes(incident.time_to_resolve),
                    "breaches_response_policy": incident.id in customer.response.breaches,
                }
            )
        writer.writerow(
            {
                **base,
                "record": "customer_response",
                "mtta_minutes": _minutes(customer.response.mtta),
                "mttr_minutes": _minutes(customer.response.mttr),
            }
        )
    writer.writerow(
        {
            "record": "overall_response",
            "period": report.period.label,
            "mtta_minutes": _minutes(report.overall.mtta),
            "mttr_minutes": _minutes(report.overall.mttr),
        }
    )
    return out.getvalue()


def _location_row(figures: LocationFigures) -> dict[str, Any]:
    a = figures.availability
    return {
        "record": "location",
        "check": figures.check,
        "location": figures.location,
        "sla_target_percent": a.target,
        **{f"{s}_minutes": _minutes(a.seconds[s]) for s in STATUSES},
        "measured_minutes": _minutes(a.measured),
        "downtime_minutes": _minutes(a.downtime),
        "coverage_percent": _percent(a.coverage),
        "sla_availability_percent": _percent(a.sla_availability),
        "sla_met": a.met,
        "sla_verdict": a.verdict,
    }


DEFINITIONS = {
    "measured": "period minus unknown time (the monitor was not running or could not probe); "
    "unknown is never counted as up, nor as down",
    "coverage": "measured / period (a period not over yet: up to the time of the report)",
    "sla_verdict": "met or missed only where coverage is at least reports.min_coverage "
    "(99 % unless configured); below it 'not determinable (coverage N %)': the figures "
    "are shown, but a share of a partly measured period is no evidence for the rest of it",
    "raw_availability": "(measured - downtime - maintenance) / measured",
    "sla_availability": "(measured - maintenance - downtime) / (measured - maintenance): the "
    "vendor's monthly uptime percentage, approved maintenance excluded",
    "downtime": "time down (plus degraded where the service's SLA counts it)",
    "downtime_budget": "(1 - target) x (period - maintenance)",
    "mtta": "mean time from detection to the first acknowledgement",
    "mttr": "mean time from detection to resolution",
}

LOCATION_DEFINITIONS = {
    "by_location": "for each check with listed locations (locations: in the config), what "
    "each listed location saw (its recorded status changes, at its own times, an agent's "
    "late ones included): in the JSON each subscription's 'locations' list, in the CSV the "
    "'location' rows after their subscription's. Minutes, coverage and availability follow "
    "the subscription's rules; time before a location's first change, or with none at all, "
    "is unknown. The subscription's own figures, decided by the quorum of its locations, "
    "are the SLA's: a location's figures show where a path failed, and their verdict is "
    "against the same target",
}


def definitions(report: Report) -> dict[str, str]:
    """The definitions the report states (with the by-location one where it has that part)."""
    return {**DEFINITIONS, **LOCATION_DEFINITIONS} if report.by_location else DEFINITIONS


def _search_path(directories: Sequence[Path]) -> list[Path]:
    return [Path(d) / "report" for d in directories] + [BUILTIN_TEMPLATES / "report"]


def _environment(directories: Sequence[Path]) -> Environment:
    """Report templates are operators' code too: the same sandbox as message templates."""
    environment = sandboxed_environment(
        _search_path(directories), autoescape=select_autoescape(["html", "j2"])
    )
    environment.filters["pct"] = lambda ratio, digits=3: (
        "—" if ratio is None else f"{ratio * 100:.{digits}f} %"
    )
    environment.filters["minutes"] = lambda seconds: (
        "—" if seconds is None else f"{seconds / 60:,.1f} min"
    )
    return environment


def report_environment(directories: Sequence[Path] = ()) -> Environment:
    """The sandboxed environment of report templates (the auditor's and the customer's)."""
    return _environment(directories)


def to_html(report: Report, directories: Sequence[Path] = ()) -> str:
    return "".join(html_parts(report, directories))


def html_parts(report: Report, directories: Sequence[Path] = ()) -> Iterator[str]:
    """The printable HTML report, in the pieces the template yields."""
    return _html_parts(report, _environment(directories))


def _to_html(report: Report, environment: Environment) -> str:
    return "".join(_html_parts(report, environment))


def _html_parts(report: Report, environment: Environment) -> Iterator[str]:
    zone = ZoneInfo(report.period.timezone)

    def local(value: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "—" if value is None else datetime.fromtimestamp(value, zone).strftime(fmt)

    template = environment.get_template("report.html.j2")
    return template.generate(
        report=report,
        local=local,
        definitions=definitions(report),
        statuses=STATUSES,
        day_color=_day_color,
        version=__version__,
    )


def to_text(report: Report, directories: Sequence[Path] = ()) -> str:
    """A short plain-text summary (the body of the monthly report e-mail)."""
    return _to_text(report, _environment(directories))


def _to_text(report: Report, environment: Environment) -> str:
    return environment.get_template("report.txt.j2").render(report=report)


def _day_color(
    figure_availability: float | None, coverage: float | None, target: float | None
) -> str:
    if coverage is None:
        return "#e0e0e0"  # not yet (future)
    if figure_availability is None or coverage < 0.5:
        return "#9e9e9e"  # mostly unknown
    if figure_availability >= (target or 99.9) / 100:
        return "#2e7d32"
    if figure_availability >= 0.99:
        return "#f9a825"
    return "#c62828"


FORMATS = ("html", "pdf", "csv", "json")


def render(report: Report, fmt: str, directories: Sequence[Path] = ()) -> tuple[str, str | bytes]:
    """(content type, body) for ``fmt`` html, pdf (bytes), csv or json."""
    if fmt == "pdf":
        return PDF_TYPE, html_to_pdf(to_html(report, directories))
    if fmt == "json":
        return "application/json", to_json(report)
    if fmt == "csv":
        return "text/csv", to_csv(report)
    if fmt == "html":
        return "text/html", to_html(report, directories)
    raise ValueError(f"unknown format {fmt!r} (html, pdf, csv, json)")


_CHUNK = 256 * 1024


def render_chunks(
    report: Report, fmt: str, directories: Sequence[Path] = ()
) -> tuple[str, list[bytes]]:
    """(content type, body as UTF-8 chunks of about 256 KB) for ``fmt`` html, pdf, csv or
    json (a PDF is one chunk: WeasyPrint lays out the whole document at once).

    What the API sends: a year's report for thousands of customers is hundreds of
    megabytes, and it is never joined into one string (each copy of one would hold the
    interpreter lock, stalling the event loop, and double the memory).
    """
    if fmt == "pdf":
        return PDF_TYPE, [html_to_pdf(to_html(report, directories))]
    if fmt == "csv":
        return "text/csv", [to_csv(report).encode()]
    if fmt == "json":
        content_type, parts = "application/json", json_parts(report)
    elif fmt == "html":
        content_type, parts = "text/html", html_parts(report, directories)
    else:
        raise ValueError(f"unknown format {fmt!r} (html, pdf, csv, json)")
    chunks: list[bytes] = []
    pending: list[str] = []
    size = 0
    for part in parts:
        pending.append(part)
        size += len(part)
        if size >= _CHUNK:
            chunks.append("".join(pending).encode())
            pending, size = [], 0
    if pending:
        chunks.append("".join(pending).encode())
    return content_type, chunks


__all__ = [
    "CustomerSection",
    "render",
    "render_chunks",
    "to_csv",
    "to_html",
    "to_json",
    "to_text",
]


SAMPLE_CUSTOMERS = 100
"""Customers at most in the sample report the templates are checked with."""


def _sample_customers(catalog: Catalog) -> set[str]:
    """One customer of each shape the report template can tell apart (tier, services,
    tenant domain or none), at most ``SAMPLE_CUSTOMERS``: the check renders what every
    customer's section can look like, in milliseconds instead of minutes at 50,000
    customers (``check_templates`` runs at every start-up and reload)."""
    services: dict[str, list[str]] = {}
    for customer, service in catalog.subscriptions:
        services.setdefault(customer, []).append(service)
    chosen: dict[tuple[object, ...], str] = {}
    for spec in catalog.config.customers:
        shape = (spec.tier, tuple(services.get(spec.id, ())), spec.tenant_domain is None)
        chosen.setdefault(shape, spec.id)
        if len(chosen) >= SAMPLE_CUSTOMERS:
            break
    return set(chosen.values())


def check_templates(catalog: Catalog, directories: Sequence[Path] = ()) -> list[TemplateProblem]:
    """Problems in the report templates (``validate``, start-up, reload): syntax errors
    in any file, then both documents rendered with an empty sample report."""
    environment = _environment(directories)
    search_path = _search_path(directories)
    problems = []
    for name in environment.list_templates(filter_func=lambda name: name.endswith(".j2")):
        try:
            environment.get_template(name)
        except Exception as exc:  # every problem is reported, none raised
            problems.append(template_problem(exc, search_path, f"report/{name}"))
    if problems:
        return problems
    period = month_of(time.time(), catalog.config.reports.timezone, offset=-1)
    sample = compose(
        catalog,
        period,
        [],
        [],
        [],
        now=time.time(),
        audit_head=(0, ""),
        only=_sample_customers(catalog),
    )
    for name, renderer in (("report.html.j2", _to_html), ("report.txt.j2", _to_text)):
        try:
            renderer(sample, environment)
        except Exception as exc:  # an operator's template must not crash validate or reload
            problems.append(template_problem(exc, search_path, f"report/{name}"))
    if catalog.config.customers:  # and the customer's monthly report, for the first customer
        from monitor.reports.customer import compose_customer_report
        from monitor.reports.customer_render import customer_html, customer_text

        first = catalog.config.customers[0].id
        one = compose(
            catalog, period, [], [], [], now=time.time(), audit_head=(0, ""), customer=first
        )
        customer_sample = compose_customer_report(catalog, one, [], {}, time.time())
        for name, render_customer in (
            ("customer.html.j2", customer_html),
            ("customer.txt.j2", customer_text),
        ):
            try:
                render_customer(customer_sample, directories)
            except Exception as exc:  # reported like the auditor's templates
                problems.append(template_problem(exc, search_path, f"report/{name}"))
    return problems
