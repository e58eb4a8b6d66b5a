"""Schedules one APScheduler job per target.

* start times are spread evenly over each interval, at start-up and for the
  targets a reload adds, so 10,000 targets never fire at the same instant;
* a target never runs twice at once (``max_instances=1``) and late runs
  coalesce into one;
* a target whose failure is not yet confirmed is probed at its
  ``retry_interval`` until it is (see ``status.TargetState.pending``);
* unchanged targets keep their schedule across a reload.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.catalog import TargetSpec
from monitor.metrics import DaemonMetrics

log = logging.getLogger(__name__)

# APScheduler logs every job run at INFO: at 300 probes/s that is noise and CPU.
for _name in ("apscheduler.executors.default", "apscheduler.scheduler"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# Start times are rounded to this grid: targets due in the same 50 ms are started in one
# wake-up of the scheduler instead of one each, which saves about a fifth of the CPU per
# probe (bench/probe_cpu.py, "batched") for at most 50 ms of extra lag.
GRID_SECONDS = 0.05


def _on_grid(at: float) -> float:
    return math.ceil(at / GRID_SECONDS) * GRID_SECONDS


@dataclass(slots=True)
class _Cadence:
    """When a target's current trigger started and its period: lag is measured against it."""

    start: float
    interval: float
    retrying: bool = False


class ProbeScheduler:
    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        metrics: DaemonMetrics,
        wall: Callable[[], float],
    ) -> None:
        self._run = run
        self._metrics = metrics
        self._wall = wall
        self._cadence: dict[str, _Cadence] = {}
        self._fingerprints: dict[str, str] = {}
        self._scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    def start(self) -> None:
        self._scheduler.start()

    def pause(self) -> None:
        """Start no more runs; runs in progress go on (``shutdown`` cancels them)."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def __len__(self) -> int:
        return len(self._cadence)

    def apply(self, targets: dict[str, TargetSpec]) -> tuple[list[str], list[str], list[str]]:
        """Make the schedule match ``targets``; return (added, changed, removed) ids."""
        removed = [tid for tid in self._cadence if tid not in targets]
        for target_id in removed:
            self._remove(target_id)
        changed = [
            tid
            for tid, spec in targets.items()
            if tid in self._fingerprints and self._fingerprints[tid] != spec.fingerprint
        ]
        added = [tid for tid in targets if tid not in self._fingerprints]
        now = self._wall()
        for target_id in changed:
            self._remove(target_id)
        self._add_spread([targets[tid] for tid in changed + added], now)
        self._metrics.targets.set(len(self._cadence))
        return added, changed, removed

    def _add_spread(self, specs: Iterable[TargetSpec], now: float) -> None:
        """Spread start times evenly over each interval, ordered by a stable hash."""
        by_interval: dict[float, list[TargetSpec]] = {}
        for spec in specs:
            by_interval.setdefault(spec.timing.interval, []).append(spec)
        for interval, group in by_interval.items():
            group.sort(key=lambda spec: zlib.crc32(spec.target.id.encode()))
            step = interval / len(group)
            for index, spec in enumerate(group):
                start = _on_grid(now + index * step)
                self._schedule(spec.target.id, interval, start, retrying=False)
                self._fingerprints[spec.target.id] = spec.fingerprint

    def _schedule(self, target_id: str, interval: float, start: float, retrying: bool) -> None:
        trigger = IntervalTrigger(seconds=interval, start_date=datetime.fromtimestamp(start, UTC))
        if target_id in self._cadence:
            self._scheduler.reschedule_job(target_id, trigger=trigger)
        else:
            self._scheduler.add_job(
                self._job,
                trigger,
                args=(target_id,),
                id=target_id,
                name=target_id,
                replace_existing=True,
            )
        self._cadence[target_id] = _Cadence(start, interval, retrying)

    def _remove(self, target_id: str) -> None:
        self._cadence.pop(target_id, None)
        self._fingerprints.pop(target_id, None)
        if self._scheduler.get_job(target_id) is not None:
            self._scheduler.remove_job(target_id)

    def set_retrying(self, spec: TargetSpec, retrying: bool) -> None:
        """Switch a target between its normal and its retry interval."""
        cadence = self._cadence.get(spec.target.id)
        if cadence is None or cadence.retrying == retrying:
            return
        interval = spec.timing.retry_interval if retrying else spec.timing.interval
        if not retrying and spec.timing.retry_interval >= spec.timing.interval:
            interval = spec.timing.interval
        self._schedule(spec.target.id, interval, _on_grid(self._wall() + interval), retrying)

    def lag(self, target_id: str, now: float) -> float:
        """How late this run started against its trigger's grid."""
        cadence = self._cadence.get(target_id)
        if cadence is None or now < cadence.start:
            return 0.0
        return (now - cadence.start) % cadence.interval

    async def _job(self, target_id: str) -> None:
        self._metrics.scheduler_lag.observe(self.lag(target_id, self._wall()))
        await self._run(target_id)

    def _on_missed(self, event: JobEvent) -> None:
        reason = "misfire" if event.code == EVENT_JOB_MISSED else "still_running"
        self._metrics.missed_runs.labels(reason).inc()
        log.debug("event=probe_run_missed target=%s reason=%s", event.job_id, reason)

    def next_runs(self) -> dict[str, datetime]:
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}
