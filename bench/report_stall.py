"""A year's uptime report for 1,000 customers: does it stall the event loop?

Builds a real SQLite store in a temporary directory (a year of status history per
customer: three outages each) and ten recurring maintenance windows for every
customer (daily, weekly, monthly, in Beijing and Berlin time), then asks for the
year's report exactly as ``GET /api/v1/reports/uptime`` does: ``report_in_worker``
reads the store on the loop, then composes and renders (UTF-8 chunks of ≈ 256 KB) in a
report thread.
The garbage collector is set as the daemon sets it after start-up (frozen start-up
objects, higher thresholds). A ticker task on the same loop sleeps 10 ms at a time and records how
late it wakes: the longest lateness is the longest stall probing would have seen.

Side by side, the old behaviour, emulated with the same data: every recurring window
expanded by testing each day of the period, once per customer, then composing and
rendering on the loop itself — what one report request did before, in one block.

    python -m bench.report_stall                     # 1,000 customers, 10 windows, 2026
    python -m bench.report_stall --customers 200 --format html --no-old
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import GcWatch, print_table, proc_memory, verdict, write_config
from monitor.catalog import Catalog, load_catalog
from monitor.engine.maintenance import applies_to, occurrences
from monitor.engine.model import MaintenanceWindow
from monitor.process_memory import freeze_long_lived_objects
from monitor.reports.build import report_in_worker
from monitor.reports.model import Period, Report, compose, parse_period
from monitor.reports.render import render, render_chunks
from monitor.store import Store

GOAL_STALL = 0.100  # seconds, as for a scrape (bench.scale)
TICK = 0.010
PERIOD = "2026-01-01..2026-12-31"
WINDOWS = [  # (recurrence, first local start, hours, zone)
    ("daily", "2025-12-01 02:00", 2, "Asia/Shanghai"),
    ("daily", "2025-12-01 23:30", 1, "Asia/Shanghai"),  # across midnight
    ("daily", "2025-12-01 02:30", 1, "Europe/Berlin"),  # through both DST changes
    ("daily", "2026-03-01 12:00", 0.5, "Asia/Shanghai"),
    ("weekly", "2025-12-07 02:00", 4, "Asia/Shanghai"),  # Sundays
    ("weekly", "2025-12-06 22:00", 6, "Asia/Shanghai"),  # Saturday night
    ("weekly", "2025-12-03 03:00", 2, "Europe/Berlin"),
    ("monthly", "2025-12-01 01:00", 3, "Asia/Shanghai"),
    ("monthly", "2025-12-15 02:00", 2, "Asia/Shanghai"),
    ("monthly", "2025-12-31 02:00", 2, "Asia/Shanghai"),  # the 31st
]


class StallMeter:
    """A task that sleeps ``TICK`` at a time and records how late it wakes."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.longest = max(self.longest, loop.time() - before - TICK)
            self.ticks += 1

    async def __aenter__(self) -> StallMeter:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(TICK * 2)  # running, and its first wake-ups are not measured
        self.longest, self.ticks = 0.0, 0
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.sleep(TICK * 2)  # one more wake-up after the work
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def day_walk(window: MaintenanceWindow, start: float, end: float) -> list[tuple[float, float]]:
    """The occurrence expansion as it was: test every local day of the range."""
    duration = window.ends_at - window.starts_at
    if window.recurrence is None:
        overlaps = window.starts_at < end and window.ends_at > start
        return [(window.starts_at, window.ends_at)] if overlaps else []
    zone = ZoneInfo(window.timezone)
    first = datetime.fromtimestamp(window.starts_at, zone)
    day = datetime.fromtimestamp(max(start - duration, window.starts_at), zone).date()
    last = datetime.fromtimestamp(end, zone).date()
    found = []
    while day <= last:
        begins = _old_occurrence_on(window.recurrence, first, day)
        if begins is not None:
            at = begins.timestamp()
            if at >= window.starts_at - 1 and at < end and at + duration > start:
                found.append((at, at + duration))
        day += timedelta(days=1)
    return found


def _old_occurrence_on(recurrence: str, first: datetime, day: date) -> datetime | None:
    if recurrence == "weekly" and day.weekday() != first.weekday():
        return None
    if recurrence == "monthly" and day.day != first.day:
        return None
    return datetime.combine(day, first.timetz())


def windows() -> list[MaintenanceWindow]:
    made = []
    for number, (recurrence, first, hours, zone) in enumerate(WINDOWS, 1):
        starts = datetime.fromisoformat(first).replace(tzinfo=ZoneInfo(zone)).timestamp()
        made.append(
            MaintenanceWindow(
                f"MW-{number:02d}",
                starts,
                starts + hours * 3600,
                recurrence=recurrence,
                timezone=zone,
                reason=f"{recurrence} patching",
                created_by="bench",
            )
        )
    return made


async def fill(store: Store, catalog: Catalog, period: Period, rng: random.Random) -> int:
    """A year of history: each subscription up, with three outages of 5–120 minutes."""
    changes: list[tuple[str, str, str, float]] = []
    for customer, service in catalog.subscriptions:
        changes.append((customer, service, "up", period.start))
        moments = sorted(rng.uniform(period.start, period.end - 7200) for _ in range(3))
        for at in moments:
            status = rng.choice(["down", "degraded"])
            changes.append((customer, service, status, at))
            changes.append((customer, service, "up", at + rng.uniform(300, 7200)))
    changes.sort(key=lambda change: change[3])
    for start in range(0, len(changes), 5000):
        await store.record_statuses(changes[start : start + 5000])
    for window in windows():
        await store.add_maintenance(window, period.start)
    return len(changes)


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def run(customers: int, fmt: str, old: bool, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        base = Path(scratch)
        config = write_config(base / "config.yaml", targets=customers, port=1, interval=60)
        catalog = load_catalog(config, env={})
        period = parse_period(PERIOD, "Asia/Shanghai")
        now = period.end + 86400
        store = await Store.open(f"sqlite:///{base / 'store.db'}")
        try:
            setup, changes = time.perf_counter(), await fill(store, catalog, period, rng)
            setup = time.perf_counter() - setup
            print(
                f"{customers:,} customers, {len(WINDOWS)} recurring windows for all, "
                f"{changes:,} status changes, period {PERIOD}, format {fmt} "
                f"(store filled in {setup:.1f} s)"
            )
            freeze_long_lived_objects()  # the collector as the daemon sets it after start-up
            rss_before = proc_memory()["VmRSS"]
            peak_reset = reset_peak()
            composed: list[float] = []

            def rendered(report: Report) -> list[bytes]:  # as GET /api/v1/reports/uptime
                composed.append(time.perf_counter())
                return render_chunks(report, fmt)[1]

            with GcWatch() as collector:
                async with StallMeter() as new_stall:
                    started = time.perf_counter()
                    chunks = await report_in_worker(store, catalog, period, rendered, now=now)
                    size = sum(len(chunk) for chunk in chunks)  # what the API then writes
                    total = time.perf_counter() - started
            built = composed[0] - started
            memory = proc_memory()
            peak = memory.get("VmHWM", 0.0) - rss_before if peak_reset else float("nan")
            del chunks
            all_windows = await store.list_maintenance()
            old_rows: list[tuple[str, str, str, str]] = []
            if old:
                old_rows = await old_behaviour(store, catalog, period, now, fmt, all_windows)
        finally:
            await store.close()
    expansion_new, found_new = timed(
        lambda: [occurrences(w, period.start, period.end) for w in all_windows]
    )
    expansion_old, found_old = timed(
        lambda: [
            day_walk(w, period.start, period.end)
            for spec in catalog.config.customers
            for w in all_windows
            if applies_to(w, spec.id, "web")
        ]
    )
    same = found_new == found_old[: len(all_windows)]
    gc_figures = (collector.count, collector.longest)
    print_table(
        "A year's report while the loop runs (monitor.reports)",
        [
            (
                "longest loop stall while the report is built",
                f"{new_stall.longest * 1000:.0f} ms ({new_stall.ticks} ticks)",
                f"≤ {GOAL_STALL * 1000:.0f} ms",
                verdict(new_stall.longest, GOAL_STALL),
            ),
            ("report time: read + compose", f"{built:.2f} s", "", ""),
            ("report time: read + compose + render", f"{total:.2f} s", "", ""),
            (
                "garbage collections meanwhile (gen 0 / 1 / 2)",
                " / ".join(
                    f"{n}, longest {t * 1000:.0f} ms" for n, t in zip(*gc_figures, strict=True)
                ),
                "",
                "",
            ),
            (f"report size ({fmt})", f"{size / 1e6:.1f} MB", "", ""),
            (
                "peak memory during the report (VmHWM - RSS before)",
                f"{peak:.0f} MiB",
                f"RSS before {rss_before:.0f} MiB",
                "",
            ),
            (
                f"occurrences, {len(all_windows)} windows once (new)",
                f"{expansion_new * 1000:.1f} ms",
                "",
                "same as old" if same else "DIFFERENT",
            ),
            (
                f"occurrences, day by day per customer (old, {len(found_old):,} expansions)",
                f"{expansion_old:.2f} s",
                "",
                f"{expansion_old / max(expansion_new, 1e-9):,.0f}× the new",
            ),
            *old_rows,
        ],
    )


async def old_behaviour(
    store: Store,
    catalog: Catalog,
    period: Period,
    now: float,
    fmt: str,
    all_windows: list[MaintenanceWindow],
) -> list[tuple[str, str, str, str]]:
    """The old request, emulated: read, then expand per customer, compose and render on
    the loop in one block (compose's own expansion, once per window, is left in: ~ms)."""
    intervals = await store.status_intervals(start=period.start, end=period.end)
    head = await store.audit_head()

    def inline() -> None:
        for spec in catalog.config.customers:
            for window in all_windows:
                if applies_to(window, spec.id, "web"):
                    day_walk(window, period.start, period.end)
        report = compose(catalog, period, intervals, [], all_windows, now=now, audit_head=head)
        render(report, fmt)

    async with StallMeter() as stall:
        seconds, _ = timed(inline)
    return [
        (
            "old: longest loop stall (expansion, compose, render on the loop)",
            f"{stall.longest:.2f} s",
            f"≤ {GOAL_STALL * 1000:.0f} ms",
            verdict(stall.longest, GOAL_STALL),
        ),
        ("old: the same work, wall time", f"{seconds:.2f} s", "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--format", default="json", choices=["json", "csv", "html"])
    parser.add_argument("--no-old", action="store_true", help="skip the old behaviour")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    customers = max(1, min(args.customers, 20_000))
    asyncio.run(run(customers, args.format, not args.no_old, args.seed))


if __name__ == "__main__":
    main()
