"""The quorum decision: a target's status from the latest report of each location."""

from __future__ import annotations

import pytest

from monitor.engine.quorum import LocationReport, decide
from monitor.probe import Status

UP, DEGRADED, DOWN, UNKNOWN = Status.UP, Status.DEGRADED, Status.DOWN, Status.UNKNOWN
THREE = ("sh-telecom", "bj-unicom", "gz-mobile")
NOW, INTERVAL = 1000.0, 60.0


def report(location: str, status: Status, reason: str = "", age: float = 5.0) -> LocationReport:
    return LocationReport(location, status, reason, NOW - age, since=NOW - age - 100)


TIMEOUT = "connection timed out"
CASES = [
    # (name, locations, quorum, reports, expected status, expected reason)
    (
        "all up",
        THREE,
        2,
        [report("sh-telecom", UP), report("bj-unicom", UP), report("gz-mobile", UP)],
        UP,
        "up from sh-telecom, bj-unicom, gz-mobile",
    ),
    (
        "one down of three is a path problem",
        THREE,
        2,
        [report("sh-telecom", UP), report("bj-unicom", DOWN, TIMEOUT), report("gz-mobile", UP)],
        DEGRADED,
        "down from bj-unicom (connection timed out), up from sh-telecom, gz-mobile",
    ),
    (
        "two down of three reach the quorum",
        THREE,
        2,
        [
            report("sh-telecom", DOWN, "HTTP 503"),
            report("bj-unicom", DOWN, TIMEOUT),
            report("gz-mobile", UP),
        ],
        DOWN,
        "down from sh-telecom (HTTP 503), bj-unicom (connection timed out), up from gz-mobile",
    ),
    (
        "a quorum of three needs all three",
        THREE,
        3,
        [report("sh-telecom", DOWN, "x"), report("bj-unicom", DOWN, "y"), report("gz-mobile", UP)],
        DEGRADED,
        "down from sh-telecom (x), bj-unicom (y), up from gz-mobile",
    ),
    (
        "a quorum of one: any location down is down",
        THREE,
        1,
        [report("sh-telecom", UP), report("bj-unicom", DOWN, TIMEOUT), report("gz-mobile", UP)],
        DOWN,
        "down from bj-unicom (connection timed out), up from sh-telecom, gz-mobile",
    ),
    (
        "a silent location is unknown, never down",
        THREE,
        2,
        [
            report("sh-telecom", DOWN, "x"),
            report("bj-unicom", DOWN, TIMEOUT, age=121),
            report("gz-mobile", UP),
        ],
        DEGRADED,
        "down from sh-telecom (x), up from gz-mobile, no recent report from bj-unicom",
    ),
    (
        "two intervals old still counts",
        THREE,
        2,
        [
            report("sh-telecom", DOWN, "x"),
            report("bj-unicom", DOWN, "y", age=120),
            report("gz-mobile", UP),
        ],
        DOWN,
        "down from sh-telecom (x), bj-unicom (y), up from gz-mobile",
    ),
    (
        "too few reporting for a quorum is unknown",
        THREE,
        2,
        [report("sh-telecom", UP)],
        UNKNOWN,
        "up from sh-telecom, no recent report from bj-unicom, gz-mobile",
    ),
    (
        "nobody reported yet",
        THREE,
        2,
        [],
        UNKNOWN,
        "no recent report from sh-telecom, bj-unicom, gz-mobile",
    ),
    (
        "a location that cannot tell counts as not reporting",
        THREE,
        3,
        [report("sh-telecom", UP), report("bj-unicom", UNKNOWN, "blind"), report("gz-mobile", UP)],
        UNKNOWN,
        "unknown from bj-unicom (blind), up from sh-telecom, gz-mobile",
    ),
    (
        "slow from one location is degraded",
        THREE,
        2,
        [
            report("sh-telecom", UP),
            report("bj-unicom", DEGRADED, "slow: 3s > 2s"),
            report("gz-mobile", UP),
        ],
        DEGRADED,
        "degraded from bj-unicom (slow: 3s > 2s), up from sh-telecom, gz-mobile",
    ),
    (
        "reports from unlisted locations are ignored",
        ("sh-telecom",),
        1,
        [report("sh-telecom", UP), report("bj-unicom", DOWN, "x")],
        UP,
        "up from sh-telecom",
    ),
]


@pytest.mark.parametrize(
    ("locations", "quorum", "reports", "status", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_quorum_decides(
    locations: tuple[str, ...],
    quorum: int,
    reports: list[LocationReport],
    status: Status,
    reason: str,
) -> None:
    verdict = decide(locations, quorum, {r.location: r for r in reports}, NOW, INTERVAL)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert [name for name, _ in verdict.counted] == list(locations)


def test_down_dates_from_the_location_that_made_the_quorum() -> None:
    reports = {
        "sh-telecom": LocationReport("sh-telecom", DOWN, "x", NOW, since=500.0),
        "bj-unicom": LocationReport("bj-unicom", DOWN, "y", NOW, since=700.0),
        "gz-mobile": LocationReport("gz-mobile", DOWN, "z", NOW, since=900.0),
    }
    assert decide(THREE, 2, reports, NOW, INTERVAL).since == 700.0
