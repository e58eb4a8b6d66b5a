"""A reshard that takes many subscriptions over, in steps: where their first runs fall.

A daemon in this process takes the subscriptions of a node that left, as
``ClusterMember._reshard`` does, a few subscriptions a step. On a busy node each
step takes a while; here the daemon's clock is moved on by a fifth of an interval
per step instead of waiting (the one fake: a slow step), and the test reads the first
runs the scheduler planned. Every target taken over must be first probed within one
interval of the reshard's start, spread over it, whatever its steps took.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import monitor.daemon_cluster
from monitor.daemon import Daemon
from tests.conftest import WebTarget

CUSTOMERS = [f"c{i:02d}" for i in range(24)]
INTERVAL = 60.0


class Clock:
    """The daemon's wall clock: real time, plus what the test moves it on by."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[tuple[Daemon, Clock]]:
    customers = "\n".join(
        f"  - {{id: {c}, name: {c}, tenant_domain: {c}.example, subscriptions: [portal]}}"
        for c in CUSTOMERS
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 1s
defaults: {{interval: {INTERVAL:g}s, retry_interval: {INTERVAL:g}s, timeout: 3s}}
services:
  portal:
    name: Portal
    checks:
      - {{name: web, type: http, url: "http://127.0.0.1:{web_target.port}/healthz?c={{customer.id}}"}}
customers:
{customers}
""")
    clock = Clock()
    instance = Daemon(config, wall=clock)
    await instance.start()
    try:
        yield instance, clock
    finally:
        await instance.close()


async def test_targets_taken_over_in_slow_steps_are_first_probed_within_one_interval_spread(
    daemon: tuple[Daemon, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    instance, clock = daemon
    # the planned first runs are read below: none may fire before (a run due at the start
    # fired on a loaded machine, and its next run, an interval on, was read instead)
    instance.scheduler.pause()
    catalog = instance.catalog
    assert catalog is not None
    keys = sorted(catalog.subscriptions)
    kept, taken = keys[: len(keys) // 2], keys[len(keys) // 2 :]
    # the node held half of the subscriptions; the other half's node left
    instance._apply(catalog, {key: catalog.subscriptions[key] for key in kept})
    assert instance.scheduled_targets == len(kept)

    monkeypatch.setattr(monitor.daemon_cluster, "RESHARD_STEP", 3)  # four steps
    take_step = instance._apply_step
    steps = 0

    def slow_step(*args: object, **kwargs: object) -> tuple[list[str], list[str]]:
        nonlocal steps
        steps += 1
        done = take_step(*args, **kwargs)  # type: ignore[arg-type]
        clock.ahead += INTERVAL / 5  # a busy node: each step takes a fifth of an interval
        return done

    monkeypatch.setattr(instance, "_apply_step", slow_step)
    began = clock()
    added, changed, removed = await instance._apply_in_steps(catalog)

    assert steps == 4
    moved = {tid for key in taken for tid in catalog.subscriptions[key].target_ids}
    assert set(added) == moved and not changed and not removed
    # the end state is the whole shard, as one apply would leave it
    assert instance.scheduled_targets == len(keys)
    assert set(instance.board.subscriptions) == set(keys)
    next_runs = instance.scheduler.next_runs()
    assert set(next_runs) == {tid for tid in catalog.targets}
    first = sorted(next_runs[tid].timestamp() for tid in moved)
    # within one interval of the start, though the steps took most of one (each step's own
    # spread, from its own time, ended the last one's 76 s after the start)
    assert began - 0.1 <= first[0] and first[-1] < began + INTERVAL, [t - began for t in first]
    # spread over it: evenly, as at start-up (one every INTERVAL / 12, on a 50 ms grid)
    gaps = [later - earlier for earlier, later in itertools.pairwise(first)]
    assert all(gap > INTERVAL / len(moved) / 2 for gap in gaps), gaps
