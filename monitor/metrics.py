"""Prometheus metrics.

Two parts:

* ``DaemonMetrics``: the daemon's own low-cardinality metrics, kept in a
  prometheus_client registry created at start-up and passed in (no globals).
* ``TargetMetrics``: the per-target and per-subscription series, one label
  set per customer × service × check. prometheus_client spends about 180 µs
  per label set on exposition (1.8 s for 10,000 targets, longer than a scrape
  should stall the loop), so these values live in plain dicts with the label
  text built once per target, and are rendered by hand in chunks that yield to
  the event loop between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.probe import ProbeResult, Status, Target
from monitor.status import observed_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Families every target has, in exposition order: (name, type, help)
_TARGET_FAMILIES = (
    ("probe_success", "gauge", "Whether the last probe succeeded (1) or failed (0)"),
    ("probe_duration_seconds", "gauge", "How long the last probe took, in seconds"),
    (
        "csp_monitor_target_status",
        "gauge",
        "Confirmed status of the target: 0 unknown, 1 up, 2 degraded, 3 down, 4 maintenance",
    ),
    (
        "csp_monitor_target_status_change_timestamp_seconds",
        "gauge",
        "Unix time of the target's last confirmed status change",
    ),
)
_FACT_HELP = {
    "http_status_code": "Response HTTP status code",
    "http_content_length": "Length of the HTTP response body in bytes",
    "http_redirects": "Number of redirects followed",
    "http_ssl": "Whether TLS was used for the final request",
    "http_version": "HTTP version of the response",
    "ssl_earliest_cert_expiry": "Unix time of the earliest certificate expiry in the chain",
    "dns_lookup_time_seconds": "Time taken for DNS lookup, in seconds",
}
_RESULTS = tuple(
    status.value for status in (Status.UP, Status.DEGRADED, Status.DOWN, Status.UNKNOWN)
)
_CHUNK_TARGETS = 2000  # targets rendered between two yields to the event loop


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


def format_value(value: float) -> str:
    """Prometheus text for a sample value (``repr`` is exact and the fastest correct form)."""
    if value - value != 0:  # NaN or ±Inf
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return repr(value)


@dataclass(slots=True)
class _TargetSeries:
    labels: str
    phase_family: str
    values: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    # the text of each value as last rendered: most values (status codes, statuses,
    # timestamps) do not change between scrapes, and float formatting is the costly part
    texts: dict[str, tuple[float, str]] = field(default_factory=dict)


@dataclass(slots=True)
class _SubscriptionSeries:
    labels: str
    status: float = 0.0
    since: float = 0.0
    sla_target: float | None = None  # ratio, 0.999
    availability: float | None = None  # ratio over the current month (reports' figure)


class TargetMetrics:
    """Per-target series, updated after every probe and rendered by hand."""

    def __init__(self, fact_help: Mapping[str, str] | None = None) -> None:
        self._targets: dict[str, _TargetSeries] = {}
        self._subscriptions: dict[tuple[str, str], _SubscriptionSeries] = {}
        self._fact_help = dict(_FACT_HELP)
        self._fact_help.update(fact_help or {})
        self._vendor: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._phase_families: set[str] = set()
        self._fact_families: set[str] = set()

    def __len__(self) -> int:
        return len(self._targets)

    def add_target(self, target: Target) -> None:
        if target.id in self._targets:
            return
        labels = (
            f'customer="{_escape(target.customer)}",service="{_escape(target.service)}",'
            f'check="{_escape(target.check)}"'
        )
        phase_family = f"probe_{target.type}_duration_seconds"
        self._phase_families.add(phase_family)
        self._targets[target.id] = _TargetSeries(labels, phase_family)

    def remove_target(self, target_id: str) -> None:
        self._targets.pop(target_id, None)

    def set_subscription(self, customer: str, service: str, status: Status, since: float) -> None:
        key = (customer, service)
        series = self._subscriptions.get(key)
        if series is None:
            labels = f'customer="{_escape(customer)}",service="{_escape(service)}"'
            series = self._subscriptions[key] = _SubscriptionSeries(labels)
        series.status, series.since = float(status.gauge_value), since

    def set_sla(
        self,
        customer: str,
        service: str,
        *,
        target_percent: float | None = None,
        availability: float | None = None,
    ) -> None:
        """The subscription's SLA target and its availability this month (ratios)."""
        series = self._subscriptions.get((customer, service))
        if series is None:
            return
        if target_percent is not None:
            series.sla_target = round(target_percent / 100.0, 9)
        if availability is not None:
            series.availability = availability

    def set_vendor(self, customer: str, service: str, source: str, value: float) -> None:
        """What the vendor's health feed says of the service for this customer."""
        labels = (
            f'customer="{_escape(customer)}",service="{_escape(service)}",'
            f'source="{_escape(source)}"'
        )
        self._vendor[(customer, service, source)] = (labels, value)

    def remove_subscription(self, customer: str, service: str) -> None:
        self._subscriptions.pop((customer, service), None)

    def set_target_status(self, target_id: str, status: Status, since: float) -> None:
        series = self._targets[target_id]
        series.values["csp_monitor_target_status"] = float(status.gauge_value)
        series.values["csp_monitor_target_status_change_timestamp_seconds"] = since

    def record(self, target_id: str, result: ProbeResult) -> None:
        series = self._targets.get(target_id)
        if series is None:  # removed by a reload while the probe ran
            return
        values = series.values
        values["probe_success"] = 1.0 if result.success else 0.0
        values["probe_duration_seconds"] = result.duration
        for fact, value in result.facts.items():
            name = "probe_" + fact
            if name not in values:
                self._fact_families.add(name)
            values[name] = value
        if result.phases:
            series.phases = result.phases
        outcome = observed_status(result).value
        series.results[outcome] = series.results.get(outcome, 0) + 1

    async def render(self) -> AsyncIterator[bytes]:
        """The exposition text, in chunks; yields to the loop between chunks."""
        targets = list(self._targets.values())
        families = [(name, kind, help_text) for name, kind, help_text in _TARGET_FAMILIES]
        families += [
            (
                name,
                "gauge",
                self._fact_help.get(name.removeprefix("probe_"), f"Value {name} of the last probe"),
            )
            for name in sorted(self._fact_families)
        ]
        for name, kind, help_text in families:
            yield f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n".encode()
            for start in range(0, len(targets), _CHUNK_TARGETS):
                yield _family_lines(name, targets[start : start + _CHUNK_TARGETS])
                await asyncio.sleep(0)
        for name in sorted(self._phase_families):
            yield (
                f"# HELP {name} Duration of each phase of the last probe, in seconds\n"
                f"# TYPE {name} gauge\n"
            ).encode()
            for start in range(0, len(targets), _CHUNK_TARGETS):
                yield _phase_lines(name, targets[start : start + _CHUNK_TARGETS])
                await asyncio.sleep(0)
        name = "csp_monitor_probes_total"
        yield (
            f"# HELP {name} Probes run, by what they observed (before thresholds)\n"
            f"# TYPE {name} counter\n"
        ).encode()
        for start in range(0, len(targets), _CHUNK_TARGETS):
            lines = [
                f'{name}{{{series.labels},result="{result}"}} {count}\n'
                for series in targets[start : start + _CHUNK_TARGETS]
                for result, count in series.results.items()
            ]
            yield "".join(lines).encode()
            await asyncio.sleep(0)
        subscriptions = list(self._subscriptions.values())
        if self._vendor:
            name = "csp_monitor_vendor_status"
            yield (
                f"# HELP {name} The vendor's own view of the service for the customer: "
                f"0 unknown or unsupported, 1 up, 2 degraded, 3 down\n"
                f"# TYPE {name} gauge\n"
            ).encode()
            yield "".join(
                f"{name}{{{labels}}} {format_value(value)}\n"
                for labels, value in self._vendor.values()
            ).encode()
        for name, help_text, attribute, extra in _SUBSCRIPTION_FAMILIES:
            yield f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode()
            for start in range(0, len(subscriptions), _CHUNK_TARGETS):
                lines = []
                for series in subscriptions[start : start + _CHUNK_TARGETS]:
                    value = getattr(series, attribute)
                    if value is not None:
                        lines.append(f"{name}{{{series.labels}{extra}}} {format_value(value)}\n")
                yield "".join(lines).encode()
                await asyncio.sleep(0)


# Per-subscription families: (name, help, attribute of _SubscriptionSeries, extra labels)
_SUBSCRIPTION_FAMILIES = (
    (
        "csp_monitor_subscription_status",
        "Status of the customer's subscription to the service: 0 unknown, 1 up, 2 degraded, "
        "3 down, 4 maintenance",
        "status",
        "",
    ),
    (
        "csp_monitor_subscription_status_change_timestamp_seconds",
        "Unix time of the subscription's last status change",
        "since",
        "",
    ),
    (
        "csp_monitor_sla_target_ratio",
        "Availability promised to the customer for this service (subscription, tier or service)",
        "sla_target",
        "",
    ),
    (
        "csp_monitor_sla_availability_ratio",
        "SLA availability of the current calendar month so far: the figure the uptime report shows",
        "availability",
        ',window="month"',
    ),
)


def _new_line(series: _TargetSeries, key: str, selector: str, value: float) -> str:
    """``selector value\n``, remembered until the value changes (callers check first, so
    an unchanged value costs neither the selector nor the float formatting)."""
    text = repr(value)
    line = f"{selector} {_SPECIAL.get(text, text)}\n"
    series.texts[key] = (value, line)
    return line


def _family_lines(name: str, chunk: list[_TargetSeries]) -> bytes:
    out: list[str] = []
    for series in chunk:
        value = series.values.get(name)
        if value is None:
            continue
        cached = series.texts.get(name)
        out.append(
            cached[1]
            if cached is not None and cached[0] == value
            else _new_line(series, name, f"{name}{{{series.labels}}}", value)
        )
    return "".join(out).encode()


def _phase_lines(name: str, chunk: list[_TargetSeries]) -> bytes:
    out: list[str] = []
    for series in chunk:
        if series.phase_family != name:
            continue
        for phase, value in series.phases.items():
            key = "phase:" + phase
            cached = series.texts.get(key)
            out.append(
                cached[1]
                if cached is not None and cached[0] == value
                else _new_line(series, key, f'{name}{{{series.labels},phase="{phase}"}}', value)
            )
    return "".join(out).encode()


class DaemonMetrics:
    """The daemon's own health: scheduler, reloads, probes in flight."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.registry = registry
        Gauge(
            "csp_monitor_build_info", "Version of csp-monitor", ["version"], registry=registry
        ).labels(version).set(1)
        self.scheduler_lag = Histogram(
            "csp_monitor_scheduler_lag_seconds",
            "Delay between a probe's scheduled time and its start",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.missed_runs = Counter(
            "csp_monitor_scheduler_missed_runs",
            "Scheduled probe runs that did not happen",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "csp_monitor_probes_in_flight", "Probes running now", registry=registry
        )
        self.targets = Gauge("csp_monitor_targets", "Targets scheduled", registry=registry)
        self.reload_success = Gauge(
            "csp_monitor_config_last_reload_successful",
            "Whether the last configuration reload attempt succeeded",
            registry=registry,
        )
        self.reload_timestamp = Gauge(
            "csp_monitor_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            registry=registry,
        )
        self.reloads = Counter(
            "csp_monitor_config_reloads",
            "Configuration reload attempts",
            ["result"],
            registry=registry,
        )
        self.transitions = Counter(
            "csp_monitor_status_changes",
            "Confirmed subscription status changes",
            ["status"],
            registry=registry,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in ("misfire", "still_running"):
            self.missed_runs.labels(reason)
        for status in Status:
            self.transitions.labels(status.value)
