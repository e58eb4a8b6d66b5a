"""Availability by location, from hand-made changes: a table of (changes, clock) → figures.

The period is [0, 10,000) s; a location's changes are given in the order they reached
the store (an agent's late ones after newer ones), and each figure is worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from monitor.reports.locations import LocatedTarget, by_target, location_figures
from monitor.store.locations import LocationChange

START, END = 0.0, 10_000.0
TARGET = "contoso/exchange-online/owa"
LISTED = ("sh-telecom", "bj-unicom", "gz-mobile")


def change(location: str, status: str, since: float) -> LocationChange:
    return LocationChange(TARGET, location, status, since, f"{status} for the test", "node-1")


@dataclass(frozen=True)
class Case:
    changes: tuple[tuple[str, float], ...]  # (status, since) of sh-telecom, as written
    seconds: dict[str, float]  # expected, by status (unknown: unrecorded time included)
    coverage: float
    availability: float | None
    verdict: str
    now: float = 20_000.0  # the report is made after the period by default
    degraded_is_down: bool = False


CASES = {
    # the status the period began in is the last change before it
    "a change before the period, one inside": Case(
        (("down", -900.0), ("up", -500.0), ("down", 2_000.0), ("up", 2_600.0)),
        {"up": 9_400.0, "down": 600.0},
        1.0,
        0.94,
        "missed",
    ),
    "the time before the first change is unknown": Case(
        (("up", 1_000.0), ("degraded", 5_000.0), ("up", 5_300.0)),
        {"up": 8_700.0, "degraded": 300.0, "unknown": 1_000.0},
        0.9,
        1.0,  # degraded is not down here ...
        "not determinable",  # ... and 90 % coverage is below the 99 % needed
    ),
    "degraded counts as down where the service's SLA says so": Case(
        (("up", 0.0), ("degraded", 5_000.0), ("up", 5_300.0)),
        {"up": 9_700.0, "degraded": 300.0},
        1.0,
        0.97,
        "missed",
        degraded_is_down=True,
    ),
    # written late (the agent was cut off): placed at the times the agent saw them
    "an agent's late changes fall where they happened": Case(
        (("up", 0.0), ("down", 7_000.0), ("down", 3_000.0), ("up", 3_600.0)),
        {"up": 6_400.0, "down": 3_600.0},
        1.0,
        0.64,
        "missed",
    ),
    "unknown said by the location is not measured; maintenance is excluded": Case(
        (("up", 0.0), ("unknown", 1_000.0), ("maintenance", 1_500.0), ("up", 2_000.0)),
        {"up": 9_000.0, "unknown": 500.0, "maintenance": 500.0},
        0.95,
        1.0,
        "not determinable",
    ),
    "a period not over yet is measured up to now": Case(
        (("up", 0.0), ("down", 4_000.0)),
        {"up": 4_000.0, "down": 1_000.0},
        1.0,
        0.8,
        "missed",
        now=5_000.0,
    ),
    "changes after the period are left out": Case(
        (("up", -10.0), ("down", 10_000.0), ("down", 12_000.0)),
        {"up": 10_000.0},
        1.0,
        1.0,
        "met",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_one_locations_figures(case: Case) -> None:
    changes = [change("sh-telecom", status, since) for status, since in case.changes]
    # another location's and an unlisted (retired) location's changes change nothing here
    changes += [change("bj-unicom", "down", -1.0), change("retired", "down", 100.0)]
    figures = location_figures(
        [LocatedTarget(TARGET, "owa", LISTED)],
        by_target(changes),
        START,
        END,
        now=case.now,
        degraded_is_down=case.degraded_is_down,
        target=99.9,
        min_coverage=0.99,
    )
    assert [(f.check, f.location) for f in figures] == [("owa", name) for name in LISTED]
    a = figures[0].availability
    expected = {"up": 0.0, "degraded": 0.0, "down": 0.0, "maintenance": 0.0, "unknown": 0.0}
    assert a.seconds == {**expected, **case.seconds}
    assert a.coverage == pytest.approx(case.coverage)
    if case.availability is None:
        assert a.sla_availability is None
    else:
        assert a.sla_availability == pytest.approx(case.availability)
    assert a.verdict == case.verdict


def test_a_location_with_no_changes_has_no_coverage() -> None:
    [sh, bj, gz] = location_figures(
        [LocatedTarget(TARGET, "owa", LISTED)],
        by_target([change("sh-telecom", "up", 0.0), change("bj-unicom", "down", 5_000.0)]),
        START,
        END,
        now=20_000.0,
        degraded_is_down=False,
        target=99.9,
        min_coverage=0.99,
    )
    assert sh.availability.sla_availability == 1.0 and sh.availability.verdict == "met"
    assert bj.availability.coverage == pytest.approx(0.5)
    assert bj.availability.sla_availability == 0.0
    assert gz.availability.coverage == 0.0
    assert gz.availability.seconds["unknown"] == END - START
    assert gz.availability.sla_availability is None
    assert gz.availability.verdict == "not determinable"


def test_without_an_sla_target_there_is_no_verdict() -> None:
    figures = location_figures(
        [LocatedTarget(TARGET, "owa", ("sh-telecom",))],
        by_target([change("sh-telecom", "up", 0.0)]),
        START,
        END,
        now=20_000.0,
        degraded_is_down=False,
        target=None,
        min_coverage=0.99,
    )
    [only] = figures
    assert only.availability.verdict is None and only.availability.sla_availability == 1.0
