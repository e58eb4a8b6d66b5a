"""Who is on call when: tables of (rotation, overrides, time) → person, with a fake clock.

Times are written as local wall-clock times in the zone the table is about and turned
into Unix seconds here, so each row reads as an operator would say it.
"""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from monitor.engine.oncall import (
    Layer,
    Override,
    Schedule,
    gaps,
    next_shift,
    on_call,
    shifts,
)

BEIJING = "Asia/Shanghai"
LONDON = "Europe/London"
TEAM = ("wang.wei", "li.na", "zhang.min")


def at(text: str, zone: str = BEIJING) -> float:
    """'2026-12-24 20:00' in ``zone`` as Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


def rotation(zone: str = BEIJING, **options: object) -> Layer:
    values: dict[str, object] = {
        "name": "main",
        "members": TEAM,
        "start": date(2026, 12, 21),
        "zone": zone,
        "handoff": time(0, 0),
        "turn_days": 1,
    }
    values.update(options)
    return Layer(**values)  # type: ignore[arg-type]


def person(schedule: Schedule, when: float, overrides: tuple[Override, ...] = ()) -> str | None:
    found = on_call(schedule, overrides, when)
    return found.person if found else None


DAILY_MIDNIGHT = Schedule("primary", (rotation(),))
WEEKLY = Schedule("primary", (rotation(handoff=time(9, 0), turn_days=7),))
EVERY_3_DAYS = Schedule("primary", (rotation(handoff=time(9, 0), turn_days=3),))


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        # a daily turn handed over at midnight Beijing time (16:00 UTC the day before)
        (DAILY_MIDNIGHT, at("2026-12-20 23:59:59"), None),  # before the rotation starts
        (DAILY_MIDNIGHT, at("2026-12-21 00:00"), "wang.wei"),
        (DAILY_MIDNIGHT, at("2026-12-21 23:59:59"), "wang.wei"),
        (DAILY_MIDNIGHT, at("2026-12-22 00:00"), "li.na"),
        (DAILY_MIDNIGHT, utc("2026-12-22 15:59:59"), "li.na"),  # 23:59:59 Beijing
        (DAILY_MIDNIGHT, utc("2026-12-22 16:00"), "zhang.min"),  # midnight Beijing
        (DAILY_MIDNIGHT, at("2026-12-24 12:00"), "wang.wei"),  # the turn comes round again
        (DAILY_MIDNIGHT, at("2027-01-01 00:00"), "zhang.min"),  # 11 days on: 11 % 3 = 2
        # weekly turns handed over Monday 09:00
        (WEEKLY, at("2026-12-28 08:59"), "wang.wei"),
        (WEEKLY, at("2026-12-28 09:00"), "li.na"),
        (WEEKLY, at("2027-01-04 09:00"), "zhang.min"),
        (WEEKLY, at("2027-01-11 09:00"), "wang.wei"),
        # three-day turns
        (EVERY_3_DAYS, at("2026-12-24 08:59"), "wang.wei"),
        (EVERY_3_DAYS, at("2026-12-24 09:00"), "li.na"),
        (EVERY_3_DAYS, at("2026-12-30 09:00"), "wang.wei"),
    ],
)
def test_rotation_turns(schedule: Schedule, when: float, expected: str | None) -> None:
    assert person(schedule, when) == expected


# London: summer time began 2026-03-29 01:00 UTC (01:00 GMT → 02:00 BST) and ends
# 2026-10-25 01:00 UTC (02:00 BST → 01:00 GMT).
LONDON_DAILY_9 = Schedule(
    "emea",
    (rotation(LONDON, start=date(2026, 3, 27), handoff=time(9, 0), members=("amy", "ben")),),
)
LONDON_1_30 = Schedule(
    "emea",
    (rotation(LONDON, start=date(2026, 10, 24), handoff=time(1, 30), members=("amy", "ben")),),
)
LONDON_SPRING_1_30 = Schedule(
    "emea",
    (rotation(LONDON, start=date(2026, 3, 28), handoff=time(1, 30), members=("amy", "ben")),),
)


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        # 09:00 local stays 09:00 local: 09:00 UTC in winter, 08:00 UTC in summer
        (LONDON_DAILY_9, utc("2026-03-28 08:59"), "amy"),
        (LONDON_DAILY_9, utc("2026-03-28 09:00"), "ben"),  # 28 March: still GMT
        (LONDON_DAILY_9, utc("2026-03-29 07:59"), "ben"),  # 08:59 BST
        (LONDON_DAILY_9, utc("2026-03-29 08:00"), "amy"),  # 09:00 BST: a 23-hour turn
        (LONDON_DAILY_9, utc("2026-10-24 07:59"), "amy"),  # 08:59 BST, 210 days on
        (LONDON_DAILY_9, utc("2026-10-24 08:00"), "ben"),  # 09:00 BST
        (LONDON_DAILY_9, utc("2026-10-25 08:00"), "ben"),  # 08:00 GMT: still ben's turn
        (LONDON_DAILY_9, utc("2026-10-25 09:00"), "amy"),  # 09:00 GMT: a 25-hour turn
        # a handoff inside the hour the fall-back repeats happens once, at its first pass
        (LONDON_1_30, utc("2026-10-25 00:29"), "amy"),  # 01:29 BST
        (LONDON_1_30, utc("2026-10-25 00:30"), "ben"),  # 01:30 BST
        (LONDON_1_30, utc("2026-10-25 01:15"), "ben"),  # 01:15 GMT, the hour again: no flip
        (LONDON_1_30, utc("2026-10-25 01:31"), "ben"),  # 01:31 GMT
        # a handoff at a time the spring-forward skips happens as if it had not jumped
        # (01:00-02:00 does not exist on 29 March: 01:30 GMT is read, 02:30 BST)
        (LONDON_SPRING_1_30, utc("2026-03-29 00:59"), "amy"),  # 00:59 GMT
        (LONDON_SPRING_1_30, utc("2026-03-29 01:00"), "amy"),  # 02:00 BST, the jump
        (LONDON_SPRING_1_30, utc("2026-03-29 01:29"), "amy"),  # 02:29 BST
        (LONDON_SPRING_1_30, utc("2026-03-29 01:30"), "ben"),  # 02:30 BST
    ],
)
def test_handoff_across_daylight_saving_changes(
    schedule: Schedule, when: float, expected: str
) -> None:
    assert person(schedule, when) == expected


def test_a_turn_across_the_changes_lasts_23_and_25_hours() -> None:
    spring = shifts(LONDON_DAILY_9, (), utc("2026-03-28 00:00"), utc("2026-03-30 00:00"))
    assert [(s.person, (s.end - s.start) / 3600) for s in spring[1:2]] == [("ben", 23.0)]
    autumn = shifts(LONDON_DAILY_9, (), utc("2026-10-24 00:00"), utc("2026-10-26 00:00"))
    assert [(s.person, (s.end - s.start) / 3600) for s in autumn[1:2]] == [("ben", 25.0)]


# The base rotation by day, a night layer on top (20:00-08:00 Beijing), and a weekend
# layer above both.
LAYERED = Schedule(
    "primary",
    (
        rotation(handoff=time(9, 0), turn_days=7),
        rotation(
            name="nights",
            members=("night.owl", "late.bird"),
            hours=(time(20, 0), time(8, 0)),
            handoff=time(20, 0),
        ),
        rotation(name="weekend", members=("weekend.duty",), days=frozenset({5, 6})),
    ),
)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (at("2026-12-22 12:00"), "wang.wei"),  # Tuesday noon: the base layer
        (at("2026-12-22 19:59"), "wang.wei"),
        (at("2026-12-22 20:00"), "late.bird"),  # the night layer wins where it has someone
        (at("2026-12-23 07:59"), "late.bird"),  # across midnight, the same night's person
        (at("2026-12-23 08:00"), "wang.wei"),
        (at("2026-12-23 20:00"), "night.owl"),  # the nights rotate daily at 20:00
        (at("2026-12-26 12:00"), "weekend.duty"),  # Saturday: the top layer
        (at("2026-12-27 23:00"), "weekend.duty"),  # Sunday night: still the top layer
        (at("2026-12-28 00:30"), "night.owl"),  # Monday 00:30: Sunday's night window
        (at("2026-12-28 12:00"), "li.na"),  # the base layer's next week
    ],
)
def test_a_higher_layer_wins_where_it_has_someone(when: float, expected: str) -> None:
    assert person(LAYERED, when) == expected


SECOND_COVERS_FIRST = Override(
    "OV-1",
    "primary",
    "li.na",
    at("2026-12-24 20:00"),
    at("2026-12-25 08:00"),
    covers="wang.wei",
    created_at=1.0,
)
WHOLE_NIGHT = Override(
    "OV-2", "primary", "li.na", at("2026-12-24 20:00"), at("2026-12-25 08:00"), created_at=2.0
)
NEWER = Override(
    "OV-3", "primary", "zhang.min", at("2026-12-24 22:00"), at("2026-12-24 23:00"), created_at=3.0
)
OTHER_SCHEDULE = Override(
    "OV-4", "secondary", "zhang.min", at("2026-12-24 00:00"), at("2026-12-26 00:00")
)


@pytest.mark.parametrize(
    ("overrides", "when", "expected"),
    [
        # 24 December is wang.wei's day (midnight handoffs); li.na covers him 20:00-08:00
        ((SECOND_COVERS_FIRST,), at("2026-12-24 19:59"), "wang.wei"),
        ((SECOND_COVERS_FIRST,), at("2026-12-24 20:00"), "li.na"),
        ((SECOND_COVERS_FIRST,), at("2026-12-24 23:59"), "li.na"),
        # midnight: li.na's own turn begins; "covers wang.wei" has nobody left to cover
        ((SECOND_COVERS_FIRST,), at("2026-12-25 00:00"), "li.na"),
        ((SECOND_COVERS_FIRST,), at("2026-12-25 08:00"), "li.na"),
        # without `covers`, an override holds for its whole period, above every layer
        ((WHOLE_NIGHT,), at("2026-12-25 07:59"), "li.na"),
        ((WHOLE_NIGHT,), at("2026-12-25 08:00"), "li.na"),  # her own day now
        ((WHOLE_NIGHT,), at("2026-12-26 00:00"), "zhang.min"),
        # the newest override in force wins
        ((WHOLE_NIGHT, NEWER), at("2026-12-24 22:30"), "zhang.min"),
        ((WHOLE_NIGHT, NEWER), at("2026-12-24 23:00"), "li.na"),
        # another schedule's override changes nothing here
        ((OTHER_SCHEDULE,), at("2026-12-24 12:00"), "wang.wei"),
    ],
)
def test_overrides(overrides: tuple[Override, ...], when: float, expected: str) -> None:
    assert person(DAILY_MIDNIGHT, when, overrides) == expected


def test_covering_someone_applies_only_during_their_turn() -> None:
    """li.na covers wang.wei overnight across a midnight handoff, but the 24th is
    zhang.min's day here: the override applies from midnight, when wang.wei's turn
    begins, until it ends."""
    later = Schedule("primary", (rotation(start=date(2026, 12, 22)),))
    # 22 Dec wang.wei, 23 li.na, 24 zhang.min, 25 wang.wei
    override = Override(
        "OV-9",
        "primary",
        "li.na",
        at("2026-12-24 20:00"),
        at("2026-12-25 08:00"),
        covers="wang.wei",
    )
    assert person(later, at("2026-12-24 21:00"), (override,)) == "zhang.min"  # not covered
    assert person(later, at("2026-12-25 01:00"), (override,)) == "li.na"  # wang.wei's time
    assert person(later, at("2026-12-25 08:00"), (override,)) == "wang.wei"  # it ended


def test_shifts_merge_and_name_their_source() -> None:
    found = shifts(
        DAILY_MIDNIGHT, (SECOND_COVERS_FIRST,), at("2026-12-24 12:00"), at("2026-12-25 12:00")
    )
    assert [(s.person, s.source, s.start, s.end) for s in found] == [
        ("wang.wei", "layer:main", at("2026-12-24 12:00"), at("2026-12-24 20:00")),
        ("li.na", "override:OV-1", at("2026-12-24 20:00"), at("2026-12-25 00:00")),
        ("li.na", "layer:main", at("2026-12-25 00:00"), at("2026-12-25 12:00")),
    ]


def test_next_shift_is_the_next_other_person() -> None:
    upcoming = next_shift(DAILY_MIDNIGHT, (SECOND_COVERS_FIRST,), at("2026-12-24 12:00"))
    assert upcoming is not None
    assert (upcoming.person, upcoming.start) == ("li.na", at("2026-12-24 20:00"))
    single = Schedule("solo", (rotation(members=("wang.wei",)),))
    assert next_shift(single, (), at("2026-12-24 12:00")) is None


def test_gaps_are_the_times_nobody_is_on_call() -> None:
    nights_only = Schedule(
        "nights", (rotation(hours=(time(20, 0), time(8, 0)), start=date(2026, 12, 1)),)
    )
    found = gaps(nights_only, (), at("2026-12-24 00:00"), at("2026-12-25 00:00"))
    assert [(g.start, g.end) for g in found] == [(at("2026-12-24 08:00"), at("2026-12-24 20:00"))]
    # an override fills part of it
    cover = Override("OV-5", "nights", "li.na", at("2026-12-24 08:00"), at("2026-12-24 12:00"))
    found = gaps(nights_only, (cover,), at("2026-12-24 00:00"), at("2026-12-25 00:00"))
    assert [(g.start, g.end) for g in found] == [(at("2026-12-24 12:00"), at("2026-12-24 20:00"))]
    # before a rotation starts, nobody is on call
    found = gaps(DAILY_MIDNIGHT, (), at("2026-12-20 00:00"), at("2026-12-22 00:00"))
    assert [(g.start, g.end) for g in found] == [(at("2026-12-20 00:00"), at("2026-12-21 00:00"))]
