"""Prometheus metrics.

Two parts:

* ``DaemonMetrics``: the daemon's own low-cardinality metrics, kept in a
  prometheus_client registry created at start-up and passed in (no globals).
* ``TargetMetrics``: the per-target and per-subscription series, one label
  set per customer × service × check. prometheus_client spends about 180 µs
  per label set on exposition (1.8 s for 10,000 targets, longer than a scrape
  should stall the loop), so these values live in series tables
  (``monitor.exposition``) and are rendered a block at a time by templates,
  in chunks that yield to the event loop between them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.exposition import Column, SeriesTable
from monitor.exposition import escape_label_value as _escape
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
# Per-subscription families: (name, help, extra labels)
_SUBSCRIPTION_FAMILIES = (
    (
        "csp_monitor_subscription_status",
        "Status of the customer's subscription to the service: 0 unknown, 1 up, 2 degraded, "
        "3 down, 4 maintenance",
        "",
    ),
    (
        "csp_monitor_subscription_status_change_timestamp_seconds",
        "Unix time of the subscription's last status change",
        "",
    ),
    (
        "csp_monitor_sla_target_ratio",
        "Availability promised to the customer for this service (subscription, tier or service)",
        "",
    ),
    (
        "csp_monitor_sla_availability_ratio",
        "SLA availability of the current calendar month so far: the figure the uptime report shows",
        ',window="month"',
    ),
    (
        "csp_monitor_sla_coverage_ratio",
        "Share of the current calendar month so far that was measured: below "
        "reports.min_coverage the month's SLA verdict is not determinable",
        ',window="month"',
    ),
)
_VENDOR_FAMILY = "csp_monitor_vendor_status"
_VENDOR_HELP = (
    "The vendor's own view of the service for the customer: "
    "0 unknown or unsupported, 1 up, 2 degraded, 3 down"
)
_PROBES_FAMILY = "csp_monitor_probes_total"
_PROBES_HELP = "Probes run, by what they observed (before thresholds)"
_PHASE_HELP = "Duration of each phase of the last probe, in seconds"
_INFO_HELP = {
    "tls_version_info": "TLS version of the last probe's connection, as a label",
    "ssl_last_chain_info": "The leaf certificate of the last probe's chain, in labels",
}
# blocks of rows joined into one chunk (≈ 1 MB, a few ms)
_BLOCKS_PER_CHUNK = 8
# The render yields to the loop when a slice this long has passed, not after every chunk:
# with the loop busy probing, every yield waits behind all that is ready, and at 50,000
# targets 300 yields made a 0.2 s render take 7 s (bench/scale.py). A slice is the
# longest a scrape holds up probing at a stretch.
RENDER_SLICE_SECONDS = 0.04


@dataclass(slots=True)
class _TargetRow:
    row: int
    phase_family: str  # one string object per check type (interned)
    phases: tuple[str, ...] = ()  # the phases the last result reported
    # info family → the labels its series has now (see TargetMetrics._record_info); None
    # until the first (most targets are plain http: 64 bytes each of 50,000 saved)
    info: dict[str, str] | None = None


def _header(name: str, help_text: str, kind: str = "gauge") -> bytes:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n".encode()


class TargetMetrics:
    """Per-target, per-subscription and vendor series: updated after every probe and
    rendered by hand from series tables (see ``monitor.exposition``)."""

    def __init__(self, fact_help: Mapping[str, str] | None = None) -> None:
        self._targets: dict[str, _TargetRow] = {}
        self._target_table = SeriesTable()
        self._subscription_table = SeriesTable()
        self._vendor_table = SeriesTable()
        # Info series (blackbox's probe_tls_version_info, probe_ssl_last_chain_info) carry
        # their facts in labels that differ per target (a certificate's fingerprint): a
        # column per label value would grow with targets × certificates, so each target's
        # info series is a row of its own here, re-made when its labels change.
        self._info_table = SeriesTable()
        self._info_columns: dict[str, Column] = {}
        self._fact_help = dict(_FACT_HELP)
        self._fact_help.update(fact_help or {})
        table = self._target_table
        self._base = {name: table.column(name, name) for name, _, _ in _TARGET_FAMILIES}
        self._success = self._base["probe_success"]
        self._duration = self._base["probe_duration_seconds"]
        self._status = self._base["csp_monitor_target_status"]
        self._status_since = self._base["csp_monitor_target_status_change_timestamp_seconds"]
        self._facts: dict[str, Column] = {}
        self._phases: dict[str, dict[str, Column]] = {}  # phase family → phase → column
        self._results = {
            result: table.column(("result", result), _PROBES_FAMILY, f',result="{result}"')
            for result in _RESULTS
        }
        subscriptions = self._subscription_table
        self._subscription_columns = [
            subscriptions.column(name, name, extra) for name, _, extra in _SUBSCRIPTION_FAMILIES
        ]
        self._vendor_status = self._vendor_table.column(_VENDOR_FAMILY, _VENDOR_FAMILY)

    def __len__(self) -> int:
        return len(self._targets)

    def add_target(
        self, target: Target, address: str = "", location: str | None = None, key: str = ""
    ) -> None:
        """Starts the target's series. ``address`` is what it probes (a URL, host:port), the
        ``target`` label blackbox dashboards link to and list (see prometheus/README.md).
        ``key`` (default the target's id) names the series set in ``record``: an agent's
        location has its own (``id@location``) beside this node's."""
        key = key or target.id
        if key in self._targets:
            return
        labels = (
            f'customer="{_escape(target.customer)}",service="{_escape(target.service)}",'
            f'check="{_escape(target.check)}"'
        )
        if address:
            labels += f',target="{_escape(address)}"'
        if location is not None:  # where it was probed from (see Daemon._location_label)
            labels += f',location="{_escape(location)}"'
        phase_family = sys.intern(f"probe_{target.type}_duration_seconds")
        self._phases.setdefault(phase_family, {})
        row = self._target_table.add(key, labels)
        self._targets[key] = _TargetRow(row, phase_family)

    def remove_target(self, target_id: str) -> None:
        target = self._targets.pop(target_id, None)
        if target is not None:
            self._target_table.remove(target_id)
            for family in target.info or ():
                self._info_table.remove((target_id, family))

    def set_subscription(self, customer: str, service: str, status: Status, since: float) -> None:
        row = self._subscription_table.add(
            (customer, service), f'customer="{_escape(customer)}",service="{_escape(service)}"'
        )
        self._subscription_columns[0].set(row, float(status.gauge_value))
        self._subscription_columns[1].set(row, since)

    def set_sla(
        self,
        customer: str,
        service: str,
        *,
        target_percent: float | None = None,
        availability: float | None = None,
        coverage: float | None = None,
    ) -> None:
        """The subscription's SLA target, its availability and coverage this month (ratios)."""
        row = self._subscription_table.row((customer, service))
        if row is None:
            return
        if target_percent is not None:
            self._subscription_columns[2].set(row, round(target_percent / 100.0, 9))
        if availability is not None:
            self._subscription_columns[3].set(row, availability)
        if coverage is not None:
            self._subscription_columns[4].set(row, coverage)

    def set_vendor(self, customer: str, service: str, source: str, value: float) -> None:
        """What the vendor's health feed says of the service for this customer."""
        labels = (
            f'customer="{_escape(customer)}",service="{_escape(service)}",'
            f'source="{_escape(source)}"'
        )
        row = self._vendor_table.add((customer, service, source), labels)
        self._vendor_status.set(row, value)

    def remove_subscription(self, customer: str, service: str) -> None:
        self._subscription_table.remove((customer, service))

    def set_target_status(self, target_id: str, status: Status, since: float) -> None:
        row = self._targets[target_id].row
        self._status.set(row, float(status.gauge_value))
        self._status_since.set(row, since)

    def record(self, target_id: str, result: ProbeResult) -> None:
        target = self._targets.get(target_id)
        if target is None:  # removed by a reload while the probe ran
            return
        row = target.row
        self._success.set(row, 1.0 if result.success else 0.0)
        self._duration.set(row, result.duration)
        facts = self._facts
        for fact, value in result.facts.items():
            column = facts.get(fact)
            if column is None:
                name = "probe_" + fact
                column = facts[fact] = self._target_table.column(name, name)
            column.set(row, value)
        if result.phases:
            self._record_phases(target, result.phases)
        if result.info:
            self._record_info(target_id, target, result.info)
        self._results[observed_status(result).value].add(row)

    def _record_phases(self, target: _TargetRow, phases: Mapping[str, float]) -> None:
        columns = self._phases[target.phase_family]
        row = target.row
        if tuple(phases) != target.phases:  # a phase the last result had may be gone
            for phase in target.phases:
                if phase not in phases:
                    columns[phase].clear(row)
            target.phases = tuple(phases)
        for phase, value in phases.items():
            column = columns.get(phase)
            if column is None:
                column = columns[phase] = self._target_table.column(
                    ("phase", target.phase_family, phase),
                    target.phase_family,
                    f',phase="{_escape(phase)}"',
                )
            column.set(row, value)

    def _record_info(
        self, target_id: str, target: _TargetRow, info: Mapping[str, Mapping[str, str]]
    ) -> None:
        table = self._info_table
        for family, labels in info.items():
            text = "".join(f',{name}="{_escape(value)}"' for name, value in labels.items())
            if target.info is not None and target.info.get(family) == text:
                continue
            key = (target_id, family)
            table.remove(key)  # the labels changed (a new certificate): a new series
            row = table.add(key, self._target_table.labels(target.row) + text)
            column = self._info_columns.get(family)
            if column is None:
                name = "probe_" + family
                column = self._info_columns[family] = table.column(family, name)
            column.set(row, 1)
            if target.info is None:
                target.info = {}
            target.info[family] = text

    def _families(self) -> list[tuple[bytes, list[Column], SeriesTable]]:
        """Every family in exposition order: its header, its columns, their table."""
        targets = self._target_table
        families = [
            (_header(name, help_text, kind), [self._base[name]], targets)
            for name, kind, help_text in _TARGET_FAMILIES
        ]
        for fact in sorted(self._facts):
            help_text = self._fact_help.get(fact, f"Value probe_{fact} of the last probe")
            families.append((_header("probe_" + fact, help_text), [self._facts[fact]], targets))
        for name in sorted(self._phases):
            families.append(
                (_header(name, _PHASE_HELP), list(self._phases[name].values()), targets)
            )
        for family in sorted(self._info_columns):
            help_text = _INFO_HELP.get(family) or self._fact_help.get(family, "Information")
            header = _header("probe_" + family, help_text)
            families.append((header, [self._info_columns[family]], self._info_table))
        results = list(self._results.values())
        families.append((_header(_PROBES_FAMILY, _PROBES_HELP, "counter"), results, targets))
        if len(self._vendor_table):
            header = _header(_VENDOR_FAMILY, _VENDOR_HELP)
            families.append((header, [self._vendor_status], self._vendor_table))
        for (name, help_text, _), column in zip(
            _SUBSCRIPTION_FAMILIES, self._subscription_columns, strict=True
        ):
            families.append((_header(name, help_text), [column], self._subscription_table))
        return families

    async def render(
        self,
        slice_seconds: float = RENDER_SLICE_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> AsyncIterator[bytes]:
        """The exposition text, in chunks; yields to the loop once ``slice_seconds`` of
        rendering (and writing the chunks) have passed since it last did."""
        resumed = clock()
        for header, columns, table in self._families():
            yield header
            for column in columns:
                for chunk in table.render(column, _BLOCKS_PER_CHUNK):
                    yield chunk
                    if clock() - resumed >= slice_seconds:
                        await asyncio.sleep(0)
                        resumed = clock()


class DaemonMetrics:
    """The daemon's own health: scheduler, reloads, probes in flight; and the vendor's
    Message Center posts per customer (few label sets: customers × 3 × 3)."""

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
        self.vendor_messages = Gauge(
            "csp_monitor_vendor_messages",
            "Microsoft 365 Message Center posts the customer's tenant lists now",
            ["customer", "category", "severity"],
            registry=registry,
        )
        self._vendor_message_keys: set[tuple[str, str, str]] = set()
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for reason in ("misfire", "still_running"):
            self.missed_runs.labels(reason)
        for status in Status:
            self.transitions.labels(status.value)

    def set_vendor_messages(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Posts per (customer, category, severity); a combination gone is removed."""
        for key in self._vendor_message_keys - set(counts):
            self.vendor_messages.remove(*key)
        for key, count in counts.items():
            self.vendor_messages.labels(*key).set(count)
        self._vendor_message_keys = set(counts)
