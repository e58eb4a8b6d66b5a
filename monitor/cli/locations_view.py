"""``csp-monitor probe`` on a check probed from several locations: each location's last
report, as the cluster's nodes filed it, and the status a quorum of them gives."""

from __future__ import annotations

import time
from pathlib import Path

from monitor.catalog import Catalog, TargetSpec
from monitor.engine.quorum import LocationReport, counted_status, decide
from monitor.probe import Status
from monitor.store import Store


async def cluster_reports(
    catalog: Catalog, base: Path, target_ids: list[str]
) -> dict[str, dict[str, LocationReport]] | None:
    """The latest report of each location on ``target_ids``, from the cluster's store (None
    without a cluster: only this run's location is known)."""
    from monitor.alerting import store_url

    cluster = catalog.config.monitor.cluster
    if cluster is None or not cluster.enabled:
        return None
    store = await Store.open(store_url(catalog, base), application_name="csp-monitor probe")
    try:
        rows, _ = await store.location_reports(0.0)
    finally:
        await store.close()
    wanted = set(target_ids)
    found: dict[str, dict[str, LocationReport]] = {}
    for row in rows:
        if row.target_id in wanted:
            found.setdefault(row.target_id, {})[row.location] = LocationReport(
                row.location, Status(row.status), row.reason, row.at, row.since, row.node_id
            )
    return found


def location_lines(
    spec: TargetSpec, reports: dict[str, LocationReport], here: str, now: float | None = None
) -> list[str]:
    """One line per listed location (its last report and how it counts), then the verdict."""
    now = time.time() if now is None else now
    pad = f"  {'':<16}"
    lines = []
    for location in spec.locations:
        report = reports.get(location)
        counted = counted_status(report, now, spec.timing.interval).value
        mark = " (this run)" if location == here else ""
        if report is None:
            lines.append(f"{pad} {location}{mark}: no report")
            continue
        reason = f" {report.reason}" if report.reason else ""
        lines.append(
            f"{pad} {location}{mark}: {report.status.value.upper()} {now - report.at:.0f}s ago "
            f"by {report.node}{reason} (counts as {counted})"
        )
    verdict = decide(spec.locations, spec.quorum, reports, now, spec.timing.interval)
    lines.append(
        f"{pad} quorum {spec.quorum} of {len(spec.locations)}: {verdict.status.value} "
        f"({verdict.reason})"
    )
    return lines
