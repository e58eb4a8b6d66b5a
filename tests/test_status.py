"""Thresholds and state changes, fed results and times (no I/O, no sleeping)."""

from __future__ import annotations

import pytest

from monitor.config import Timing
from monitor.probe import ProbeResult, Status
from monitor.status import StatusBoard, TargetState, aggregate, observe

TIMING = Timing(
    interval=60,
    retry_interval=10,
    timeout=10,
    failure_threshold=3,
    success_threshold=2,
    degraded_latency=None,
)

# one letter per probe result
RESULTS = {
    "U": ProbeResult(success=True),
    "D": ProbeResult(success=True, degraded=True, reason="slow: 3s > 2s"),
    "F": ProbeResult(success=False, reason="connection refused"),
    "E": ProbeResult(success=False, plugin_error=True, reason="check plugin error: KeyError"),
}


def run(sequence: str, timing: Timing = TIMING) -> list[tuple[int, Status]]:
    """Feed results one per 10 s; return (index, new status) for each confirmed change."""
    state = TargetState()
    changes = []
    for index, letter in enumerate(sequence):
        transition = observe(state, "c/s/k", RESULTS[letter], timing, now=index * 10.0)
        if transition is not None:
            assert transition.confirmed_at == index * 10.0
            changes.append((index, transition.current))
    return changes


def began(sequence: str, restored: Status | None = None) -> list[tuple[int, Status]]:
    """Like ``run``, but (index of the result the new status began with, new status)."""
    state = TargetState(restored=restored)
    changes = []
    for index, letter in enumerate(sequence):
        transition = observe(state, "c/s/k", RESULTS[letter], TIMING, now=index * 10.0)
        if transition is not None:
            changes.append((int(transition.at // 10), transition.current))
    return changes


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        # first good result after start confirms up at once
        ("U", [(0, Status.UP)]),
        # down only after three failures in a row
        ("UFF", [(0, Status.UP)]),
        ("UFFF", [(0, Status.UP), (3, Status.DOWN)]),
        # a single success breaks the streak
        ("UFFUFF", [(0, Status.UP)]),
        # recovery needs two good results in a row
        ("UFFFU", [(0, Status.UP), (3, Status.DOWN)]),
        ("UFFFUU", [(0, Status.UP), (3, Status.DOWN), (5, Status.UP)]),
        ("UFFFUFUU", [(0, Status.UP), (3, Status.DOWN), (7, Status.UP)]),
        # slow but working: degraded after three degraded results
        ("UDDD", [(0, Status.UP), (3, Status.DEGRADED)]),
        # a mix of slow and failed results is degraded, not down, until three failures
        ("UDDF", [(0, Status.UP), (3, Status.DEGRADED)]),
        ("UDDFFF", [(0, Status.UP), (3, Status.DEGRADED), (5, Status.DOWN)]),
        # down, then working but slow: degraded after two, then up after two good
        ("UFFFDDUU", [(0, Status.UP), (3, Status.DOWN), (5, Status.DEGRADED), (7, Status.UP)]),
        # failing from the very start: down after three, unknown before
        ("FF", []),
        ("FFF", [(2, Status.DOWN)]),
        # plugin errors are unknown, never down, and do not break streaks
        ("UEEE", [(0, Status.UP), (3, Status.UNKNOWN)]),
        ("UFEFEF", [(0, Status.UP), (5, Status.DOWN)]),
    ],
)
def test_thresholds(sequence: str, expected: list[tuple[int, Status]]) -> None:
    assert run(sequence) == expected


def test_thresholds_follow_the_timing() -> None:
    timing = TIMING.model_copy(update={"failure_threshold": 1, "success_threshold": 1})
    assert run("UFU", timing) == [(0, Status.UP), (1, Status.DOWN), (2, Status.UP)]


@pytest.mark.parametrize(
    ("sequence", "pending"),
    [
        ("U", False),
        ("UF", True),
        ("UFF", True),
        ("UFFF", False),
        ("UFFFU", True),
        ("UFFFUU", False),
        ("UFU", False),
    ],
)
def test_pending_change_asks_for_retry_interval(sequence: str, pending: bool) -> None:
    state = TargetState()
    for index, letter in enumerate(sequence):
        observe(state, "c/s/k", RESULTS[letter], TIMING, now=float(index))
    assert state.pending is pending


@pytest.mark.parametrize(
    ("statuses", "policy", "expected"),
    [
        ([Status.UP, Status.UP], "worst", Status.UP),
        ([Status.UP, Status.DOWN], "worst", Status.DOWN),
        ([Status.UP, Status.DEGRADED], "worst", Status.DEGRADED),
        ([Status.DOWN, Status.UNKNOWN], "worst", Status.DOWN),
        ([Status.UP, Status.UNKNOWN], "worst", Status.UNKNOWN),
        ([Status.UP, Status.DOWN], "partial", Status.DEGRADED),
        ([Status.DOWN, Status.DOWN], "partial", Status.DOWN),
        ([], "worst", Status.UNKNOWN),
    ],
)
def test_subscription_aggregate(statuses: list[Status], policy: str, expected: Status) -> None:
    assert aggregate(statuses, policy) is expected


def test_board_reports_subscription_changes_with_time() -> None:
    board = StatusBoard()
    key = ("contoso", "exchange-online")
    ids = ["contoso/exchange-online/owa", "contoso/exchange-online/mx"]
    assert board.update_subscription(key, ids, "worst", now=0.0) is None  # unknown → unknown
    for target_id in ids:
        observe(board.target(target_id, 0.0), target_id, RESULTS["U"], TIMING, 5.0)
    assert board.update_subscription(key, ids, "worst", now=5.0) == (Status.UNKNOWN, Status.UP)
    owa = board.targets[ids[0]]
    for minute in range(3):
        observe(owa, ids[0], RESULTS["F"], TIMING, 60.0 + minute)
    assert board.update_subscription(key, ids, "worst", now=62.0) == (Status.UP, Status.DOWN)
    assert board.subscriptions[key].since == 62.0
    assert board.subscriptions[key].reason == "connection refused"


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        # an outage begins with its first failed probe, not with the one that confirmed it
        ("UFFF", [(0, Status.UP), (1, Status.DOWN)]),
        ("UUUFFFF", [(0, Status.UP), (3, Status.DOWN)]),
        # and ends with the first good probe of the streak that confirmed the recovery
        ("UFFFUU", [(0, Status.UP), (1, Status.DOWN), (4, Status.UP)]),
        ("UFFFUFUU", [(0, Status.UP), (1, Status.DOWN), (6, Status.UP)]),
        # slow since the first slow (or failed) result
        ("UFDD", [(0, Status.UP), (1, Status.DEGRADED)]),
        # down, then working slowly: degraded from the first result that did not fail
        ("UFFFDDUU", [(0, Status.UP), (1, Status.DOWN), (4, Status.DEGRADED), (6, Status.UP)]),
        # plugin errors do not break the streak, nor move its start
        ("UFEFEF", [(0, Status.UP), (1, Status.DOWN)]),
        ("UEEE", [(0, Status.UP), (1, Status.UNKNOWN)]),
        # failing from the very start
        ("FFF", [(0, Status.DOWN)]),
    ],
)
def test_a_status_begins_with_the_first_result_of_its_streak(
    sequence: str, expected: list[tuple[int, Status]]
) -> None:
    assert began(sequence) == expected


@pytest.mark.parametrize(
    ("restored", "sequence", "expected"),
    [
        # down before the restart and still failing: down at the first probe, no new streak
        (Status.DOWN, "F", [(0, Status.DOWN)]),
        (Status.DOWN, "U", [(0, Status.UP)]),
        (Status.DOWN, "D", [(0, Status.DEGRADED)]),
        (Status.DEGRADED, "D", [(0, Status.DEGRADED)]),
        (Status.DEGRADED, "FFF", [(0, Status.DEGRADED), (0, Status.DOWN)]),
        # nothing confirmed before: the thresholds as usual
        (None, "F", []),
        (Status.UP, "F", []),
    ],
)
def test_a_status_confirmed_before_a_restart_is_not_confirmed_again(
    restored: Status | None, sequence: str, expected: list[tuple[int, Status]]
) -> None:
    assert began(sequence, restored) == expected


def test_kept_results_read_the_same_and_share_their_whole_numbers() -> None:
    """A target's last result is kept until its next one; 50,000 of them hold mostly the
    same whole numbers. They share those objects and read back exactly as measured."""
    timing = TIMING
    board = StatusBoard()
    kept = []
    for index, target_id in enumerate(["c1/web/ok", "c2/web/ok"]):
        facts = {"http_status_code": float(200 + index * 0), "http_version": 1.1, "zero": -0.0}
        phases = {"resolve": float(index * 0), "connect": 0.000123 + index}
        result = ProbeResult(True, 0.01, facts=facts, phases=phases)
        observe(board.target(target_id, 0.0), target_id, result, timing, 10.0)
        kept.append(board.targets[target_id].last_result)
    first, second = kept
    assert first is not None and second is not None
    assert first.facts == {"http_status_code": 200.0, "http_version": 1.1, "zero": -0.0}
    assert str(first.facts["zero"]) == "-0.0"  # not made the shared 0.0
    assert first.facts["http_status_code"] is second.facts["http_status_code"]
    assert first.phases["resolve"] is second.phases["resolve"]
    assert (first.phases["connect"], second.phases["connect"]) == (0.000123, 1.000123)
