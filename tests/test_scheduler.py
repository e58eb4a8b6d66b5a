"""The scheduler: spread start times, one run at a time, retry interval, reload diff."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry

from checks.tcp import Options as TcpOptions
from monitor.catalog import TargetSpec
from monitor.config import Timing
from monitor.metrics import DaemonMetrics
from monitor.probe import Target
from monitor.scheduler import ProbeScheduler
from tests.conftest import wait_until


def spec(
    customer: str, interval: float = 1.0, retry: float = 0.2, fingerprint: str = "a"
) -> TargetSpec:
    timing = Timing(
        interval=interval,
        retry_interval=retry,
        timeout=1,
        failure_threshold=3,
        success_threshold=2,
        degraded_latency=None,
    )
    target = Target(customer, "portal", "web", "tcp")
    return TargetSpec(target, TcpOptions(host="127.0.0.1", port=1), timing, fingerprint)


def seconds(value: datetime) -> float:
    return value.timestamp()


async def test_start_times_are_spread_evenly_over_the_interval() -> None:
    ran: list[str] = []

    async def run(target_id: str) -> None:
        ran.append(target_id)

    now = time.time() + 5  # fixed clock: start times are computed, not measured
    scheduler = ProbeScheduler(run, DaemonMetrics(CollectorRegistry(), "test"), lambda: now)
    scheduler.start()
    try:
        scheduler.apply(
            {s.target.id: s for s in (spec(f"c{i:02d}", interval=10) for i in range(20))}
        )
        starts = sorted(seconds(t) for t in scheduler.next_runs().values())
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
        assert gaps == [0.5] * 19
        assert 0 <= starts[0] - now < 0.05  # on the scheduler's 50 ms grid
    finally:
        scheduler.shutdown()


async def test_targets_starting_together_each_run_once_per_interval() -> None:
    ran: list[str] = []

    async def run(target_id: str) -> None:
        ran.append(target_id)

    scheduler = ProbeScheduler(run, DaemonMetrics(CollectorRegistry(), "test"), time.time)
    scheduler.start()
    specs = {s.target.id: s for s in (spec(f"c{i:02d}", interval=0.2) for i in range(40))}
    try:
        # 40 targets over 0.2 s on a 50 ms grid: eight or more start at each grid point
        scheduler.apply(specs)
        assert len(set(scheduler.next_runs().values())) <= 5
        await wait_until(lambda: len(ran) >= 120, what="three rounds")
    finally:
        scheduler.shutdown()
    assert set(ran) == set(specs)
    counts = [ran.count(target_id) for target_id in specs]
    assert max(counts) - min(counts) <= 1  # each its turn, none twice in a round


async def test_a_target_never_runs_twice_at_once_and_late_runs_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = 0
    overlap = 0
    runs = 0

    async def slow(target_id: str) -> None:
        nonlocal running, overlap, runs
        running += 1
        runs += 1
        overlap = max(overlap, running)
        await asyncio.sleep(0.35)  # longer than the 0.1 s interval
        running -= 1

    metrics = DaemonMetrics(CollectorRegistry(), "test")
    scheduler = ProbeScheduler(slow, metrics, time.time)
    scheduler.start()
    try:
        scheduler.apply({"contoso/portal/web": spec("contoso", interval=0.1)})
        await wait_until(lambda: runs >= 3, what="three runs")
    finally:
        scheduler.shutdown()
    assert overlap == 1
    skipped = metrics.missed_runs.labels("still_running")._value.get()
    assert skipped >= 3
    # counted every time, logged once (a line per skipped run would flood a busy node)
    logged = [r for r in caplog.records if "event=probe_runs_missed" in r.getMessage()]
    assert len(logged) == 1 and "count=1 reason=still_running" in logged[0].getMessage()


async def test_at_most_concurrency_runs_at_once_and_the_rest_wait_their_turn() -> None:
    release = asyncio.Event()
    running: set[str] = set()
    most = 0
    done: list[str] = []

    async def held(target_id: str) -> None:
        nonlocal most
        running.add(target_id)
        most = max(most, len(running))
        await release.wait()
        running.discard(target_id)
        done.append(target_id)

    metrics = DaemonMetrics(CollectorRegistry(), "test")
    scheduler = ProbeScheduler(held, metrics, time.time)
    scheduler.concurrency = 3
    scheduler.start()
    specs = {s.target.id: s for s in (spec(f"c{i:02d}", interval=5) for i in range(12))}
    try:
        scheduler.apply(specs)  # all due within the first 5 s
        await wait_until(lambda: len(running) == 3, what="three runs going")
        await asyncio.sleep(0.2)
        assert len(running) == 3  # the others wait
        release.set()
        await wait_until(lambda: len(done) == 12, what="every queued run")
    finally:
        scheduler.shutdown()
    assert most == 3 and sorted(done) == sorted(specs)
    assert metrics.missed_runs.labels("still_running")._value.get() == 0


async def test_a_target_removed_while_its_run_waits_is_not_probed() -> None:
    """A reshard gives a target to another node, or a reload drops it: a run still queued
    here must not probe it (two nodes would probe it in the same interval)."""
    release = asyncio.Event()
    ran: list[str] = []

    async def held(target_id: str) -> None:
        ran.append(target_id)
        await release.wait()

    scheduler = ProbeScheduler(held, DaemonMetrics(CollectorRegistry(), "test"), time.time)
    scheduler.concurrency = 1
    scheduler.start()
    specs = {s.target.id: s for s in (spec(f"c{i:02d}", interval=0.2) for i in range(6))}
    try:
        scheduler.apply(specs)  # all six due within 0.2 s; one runs at a time
        await wait_until(lambda: len(ran) == 1, what="the first run")
        await asyncio.sleep(0.5)  # the other five are due, queued behind it
        kept = ran[0]
        scheduler.apply({kept: specs[kept]})  # and they leave this node
        release.set()
        await asyncio.sleep(0.5)
    finally:
        scheduler.shutdown()
    assert set(ran) == {kept}


async def test_pending_failure_switches_to_retry_interval_and_back() -> None:
    async def run(target_id: str) -> None:
        return None

    now = time.time()
    scheduler = ProbeScheduler(run, DaemonMetrics(CollectorRegistry(), "test"), lambda: now)
    scheduler.start()
    try:
        target = spec("contoso", interval=60, retry=10)
        scheduler.apply({target.target.id: target})
        scheduler.set_retrying(target, True)
        assert round(seconds(scheduler.next_runs()[target.target.id]) - now) == 10
        scheduler.set_retrying(target, False)
        assert round(seconds(scheduler.next_runs()[target.target.id]) - now) == 60
    finally:
        scheduler.shutdown()


async def test_reload_keeps_unchanged_schedules() -> None:
    async def run(target_id: str) -> None:
        return None

    clock = [time.time() + 5]
    scheduler = ProbeScheduler(run, DaemonMetrics(CollectorRegistry(), "test"), lambda: clock[0])
    scheduler.start()
    try:
        first = {s.target.id: s for s in (spec("a"), spec("b"), spec("c"))}
        scheduler.apply(first)
        before = scheduler.next_runs()
        clock[0] += 0.5  # time passes between the two loads
        second = {
            "a/portal/web": spec("a"),
            "b/portal/web": spec("b", fingerprint="changed"),
            "d/portal/web": spec("d"),
        }
        added, changed, removed = scheduler.apply(second)
        assert (added, changed, removed) == (["d/portal/web"], ["b/portal/web"], ["c/portal/web"])
        after = scheduler.next_runs()
        assert after["a/portal/web"] == before["a/portal/web"]
        assert after["b/portal/web"] != before["b/portal/web"]
        assert set(after) == set(second)
    finally:
        scheduler.shutdown()
