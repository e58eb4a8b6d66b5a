"""Schedules the probes: one APScheduler job per start time, for the targets that share it.

* start times are spread evenly over each interval, at start-up and for the
  targets a reload adds, so 10,000 targets never fire at the same instant;
  they are rounded to a 50 ms grid, and the targets with the same interval and
  start time form a *slot*: one APScheduler job that starts their probes.
  A job per target cost ≈ 1.3 KB and, at every run, APScheduler's own
  bookkeeping (the job store's sorted list of 50,000 jobs, events, executor
  futures): a tenth of the daemon's CPU at 50,000 targets; a slot job costs
  that once for some 80 targets (bench/scale.py);
* at most ``concurrency`` runs at once (``monitor.max_concurrency``): a due run
  waits in a queue, as a target id, until a worker task is free. A task per
  waiting run held a few KB: an overloaded node queueing 40,000 runs grew by
  hundreds of MB, where the queue costs 8 bytes a run;
* a target never runs twice at once: a slot that fires while a target's last
  run is still queued or going skips it (counted, ``still_running``); a slot
  that fires late runs once (APScheduler's coalescing);
* a target whose failure is not yet confirmed is probed at its
  ``retry_interval`` until it is (see ``status.TargetState.pending``): it
  moves to a slot of that interval, and back;
* unchanged targets keep their schedule across a reload.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.catalog import TargetSpec
from monitor.metrics import DaemonMetrics

log = logging.getLogger(__name__)

# APScheduler logs every job run at INFO: at 300 probes/s that is noise and CPU. Its
# warnings are skipped runs, which _missed() counts and logs in summary.
logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


# Start times are rounded to this grid: targets due in the same 50 ms are started in one
# wake-up of the scheduler instead of one each, which saves about a fifth of the CPU per
# probe (bench/probe_cpu.py, "batched") for at most 50 ms of extra lag.
GRID_SECONDS = 0.05
# Skipped runs are counted at once (csp_monitor_scheduler_missed_runs_total) but logged
# as one summary at most this often: when a node falls behind, a line per skipped run
# (tens of thousands a minute at 50,000 targets) would only make it fall further behind.
MISSED_LOG_EVERY = 60.0
# A slot's job only starts tasks, and is done when the loop next runs it; a loop more than
# an interval behind would find the last one still pending and skip the whole slot. The
# targets' own runs are what must not overlap (_fire checks), so slot jobs may queue.
SLOT_INSTANCES = 8

_Slot = tuple[float, float]  # (interval, first start): the targets started by one job


def _on_grid(at: float) -> float:
    return math.ceil(at / GRID_SECONDS) * GRID_SECONDS


def _slot_id(slot: _Slot) -> str:
    return f"probes every {slot[0]:g}s from {slot[1]:.2f}"


@dataclass(slots=True)
class _Cadence:
    """When a target's current trigger started and its period: lag is measured against it."""

    start: float
    interval: float
    retrying: bool = False

    @property
    def slot(self) -> _Slot:
        return (self.interval, self.start)


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
        self._slots: dict[_Slot, dict[str, None]] = {}  # each slot's targets, in order
        self.concurrency = 100  # runs at once; the daemon sets monitor.max_concurrency
        self._due: set[str] = set()  # targets whose run is queued or going
        self._queue: deque[str] = deque()  # runs due, in order, waiting for a worker
        self._workers: set[asyncio.Task[None]] = set()
        self._missed_unlogged = 0
        self._missed_logged_at = -math.inf
        self._scheduler = AsyncIOScheduler(
            # no misfires: a late slot still runs (once); only overlapping runs are skipped
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._on_slot_skipped, EVENT_JOB_MAX_INSTANCES)

    def start(self) -> None:
        self._scheduler.start()

    def pause(self) -> None:
        """Start no more runs; runs in progress go on (``shutdown`` cancels them)."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        """Stop scheduling, drop the queued runs and cancel those in progress."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._queue.clear()
        for task in self._workers:
            task.cancel()

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
        specs = list(specs)
        self._add_at(specs, self.spread(specs, now), now)

    @staticmethod
    def spread(specs: Iterable[TargetSpec], now: float) -> dict[str, float]:
        """First start times for ``specs`` spread evenly over each interval from ``now``,
        ordered by a stable hash: each target's first run within one interval, no herd."""
        by_interval: dict[float, list[TargetSpec]] = {}
        for spec in specs:
            by_interval.setdefault(spec.timing.interval, []).append(spec)
        starts: dict[str, float] = {}
        for interval, group in by_interval.items():
            group.sort(key=lambda spec: zlib.crc32(spec.target.id.encode()))
            step = interval / len(group)
            for index, spec in enumerate(group):
                starts[spec.target.id] = _on_grid(now + index * step)
        return starts

    def _add_at(self, specs: Iterable[TargetSpec], starts: Mapping[str, float], now: float) -> None:
        for spec in specs:
            # a start planned earlier and passed meanwhile: at once (never a run in the past)
            start = max(starts[spec.target.id], _on_grid(now))
            self._schedule(spec.target.id, spec.timing.interval, start, retrying=False)
            self._fingerprints[spec.target.id] = spec.fingerprint

    def add(self, specs: Iterable[TargetSpec], starts: Mapping[str, float]) -> list[str]:
        """Schedule targets not scheduled yet, each first at its start in ``starts`` (see
        ``spread``); return their ids. A part of a change planned as a whole: a reshard
        adds its targets a step at a time, their first runs spread over one interval from
        its beginning (``apply`` would spread each step from its own time, and compares
        every target scheduled, where this costs only the targets added)."""
        fresh = [spec for spec in specs if spec.target.id not in self._fingerprints]
        self._add_at(fresh, starts, self._wall())
        self._metrics.targets.set(len(self._cadence))
        return [spec.target.id for spec in fresh]

    def remove(self, target_ids: Iterable[str]) -> list[str]:
        """Unschedule these targets (those scheduled); return their ids. A queued run of
        one is dropped when its turn comes (see ``_work``)."""
        removed = [tid for tid in target_ids if tid in self._cadence]
        for target_id in removed:
            self._remove(target_id)
        self._metrics.targets.set(len(self._cadence))
        return removed

    def _schedule(self, target_id: str, interval: float, start: float, retrying: bool) -> None:
        self._leave_slot(target_id)
        cadence = self._cadence[target_id] = _Cadence(start, interval, retrying)
        slot = cadence.slot
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = {}
            self._scheduler.add_job(
                self._fire,
                IntervalTrigger(seconds=interval, start_date=datetime.fromtimestamp(start, UTC)),
                args=(slot,),
                id=_slot_id(slot),
                name=_slot_id(slot),
                replace_existing=True,
                max_instances=SLOT_INSTANCES,
            )
        members[target_id] = None

    def _leave_slot(self, target_id: str) -> None:
        cadence = self._cadence.get(target_id)
        if cadence is None:
            return
        slot = cadence.slot
        members = self._slots.get(slot)
        if members is None:
            return
        members.pop(target_id, None)
        if not members:
            del self._slots[slot]
            if self._scheduler.get_job(_slot_id(slot)) is not None:
                self._scheduler.remove_job(_slot_id(slot))

    def _remove(self, target_id: str) -> None:
        self._leave_slot(target_id)
        self._cadence.pop(target_id, None)
        self._fingerprints.pop(target_id, None)

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

    async def _fire(self, slot: _Slot) -> None:
        """A slot is due: queue a run for each of its targets not still queued or going,
        and start workers for them (up to ``concurrency``)."""
        skipped = 0
        for target_id in self._slots.get(slot, ()):
            if target_id in self._due:
                skipped += 1
                continue
            self._due.add(target_id)
            self._queue.append(target_id)
        for _ in range(min(self.concurrency - len(self._workers), len(self._queue))):
            worker = asyncio.create_task(self._work())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        if skipped:
            self._missed(skipped, "still_running")

    async def _work(self) -> None:
        """Runs queued runs one after another until the queue is empty."""
        queue = self._queue
        while queue:
            target_id = queue.popleft()
            if target_id not in self._cadence:  # removed while it waited (a reload, or a
                self._due.discard(target_id)  # reshard gave it to another node): not ours
                continue
            try:
                self._metrics.scheduler_lag.observe(self.lag(target_id, self._wall()))
                await self._run(target_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the pipeline: logged, and the schedule goes on
                log.exception("event=probe_run_failed target=%s", target_id)
            finally:
                self._due.discard(target_id)

    def _on_slot_skipped(self, event: JobEvent) -> None:
        """A loop far behind skipped a slot: none of its targets ran."""
        for slot in self._slots:
            if _slot_id(slot) == event.job_id:
                self._missed(len(self._slots[slot]), "still_running")
                return

    def _missed(self, count: int, reason: str) -> None:
        self._metrics.missed_runs.labels(reason).inc(count)
        self._missed_unlogged += count
        now = time.monotonic()
        if now - self._missed_logged_at >= MISSED_LOG_EVERY:
            log.warning(
                "event=probe_runs_missed count=%d reason=%s action=%r",
                self._missed_unlogged,
                reason,
                "probes take longer than their interval, or this node is overloaded: "
                "see csp_monitor_scheduler_lag_seconds",
            )
            self._missed_unlogged, self._missed_logged_at = 0, now

    def next_runs(self) -> dict[str, datetime]:
        """Each target's next scheduled run."""
        slot_runs = {job.id: job.next_run_time for job in self._scheduler.get_jobs()}
        return {
            target_id: slot_runs[_slot_id(slot)]
            for slot, members in self._slots.items()
            if _slot_id(slot) in slot_runs
            for target_id in members
        }
