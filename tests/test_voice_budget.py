"""Per-callee voice-call budgets: a table of (budget, calls placed, now) → allowed or why not."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from monitor.engine.voice_budget import (
    ALIYUN_DEFAULT,
    TENCENT_DEFAULT,
    CallBudget,
    CallWindow,
    NightRule,
    check,
)

BEIJING = ZoneInfo("Asia/Shanghai")


def bj(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """A Beijing wall-clock time in January 2027, as Unix seconds."""
    return datetime(2027, 1, day, hour, minute, second, tzinfo=BEIJING).timestamp()


@pytest.mark.parametrize(
    ("name", "budget", "calls", "now", "refused_because"),
    [
        ("first call of the day", TENCENT_DEFAULT, [], bj(14, 10), None),
        ("tencent: 1 per 30 s", TENCENT_DEFAULT, [bj(14, 10)], bj(14, 10, 0, 20), "per 30 s"),
        ("tencent: 31 s later is fine", TENCENT_DEFAULT, [bj(14, 10)], bj(14, 10, 0, 31), None),
        ("tencent: 2 per 10 min", TENCENT_DEFAULT, [bj(14, 10), bj(14, 10, 1)], bj(14, 10, 5),
         "2 of 2 calls per 10 min"),
        ("tencent: the 10 min window slides", TENCENT_DEFAULT, [bj(14, 10), bj(14, 10, 1)],
         bj(14, 10, 10, 1), None),
        ("tencent: 3 a day", TENCENT_DEFAULT, [bj(14, 9), bj(14, 12), bj(14, 15)], bj(14, 18),
         "3 of 3 calls per 1 day"),
        ("tencent: a day is 24 h, not the calendar day", TENCENT_DEFAULT,
         [bj(14, 9), bj(14, 12), bj(14, 15)], bj(15, 9, 0, 1), None),
        ("night: one call at 22:30 forbids another at 23:30", TENCENT_DEFAULT, [bj(14, 22, 30)],
         bj(14, 23, 30), "between 22:00 and 08:00"),
        ("night: … and at 07:59 the next morning", TENCENT_DEFAULT, [bj(14, 22, 30)],
         bj(15, 7, 59), "between 22:00 and 08:00"),
        ("night: 08:00 is day again", TENCENT_DEFAULT, [bj(14, 22, 30)], bj(15, 8, 0), None),
        ("night: a call at 21:50 was a day call", TENCENT_DEFAULT, [bj(14, 21, 50)],
         bj(14, 23, 0), None),
        ("night: after midnight, a call of the evening counts", TENCENT_DEFAULT,
         [bj(14, 23, 50)], bj(15, 1, 0), "between 22:00 and 08:00"),
        ("aliyun: 1 a minute", ALIYUN_DEFAULT, [bj(14, 10)], bj(14, 10, 0, 59), "per 1 min"),
        ("aliyun: 5 an hour", ALIYUN_DEFAULT, [bj(14, 10, m) for m in (0, 5, 10, 15, 20)],
         bj(14, 10, 30), "5 of 5 calls per 1 h"),
        ("aliyun: no night rule", ALIYUN_DEFAULT, [bj(14, 22, 30)], bj(14, 23, 30), None),
        ("raised night limit", CallBudget((), NightRule(3, time(22), time(8))),
         [bj(14, 22, 30), bj(14, 23)], bj(15, 2), None),
    ],
)  # fmt: skip
def test_budget(
    name: str,
    budget: CallBudget,
    calls: list[float],
    now: float,
    refused_because: str | None,
) -> None:
    refusal = check(budget, calls, now)
    if refused_because is None:
        assert refusal is None, name
    else:
        assert refusal is not None and refused_because in refusal.reason, name


def test_a_refusal_says_when_a_call_is_possible_again() -> None:
    # the night rule outlasts the 30 s window: the later one wins
    refusal = check(TENCENT_DEFAULT, [bj(14, 23)], bj(14, 23, 0, 10))
    assert refusal is not None
    assert "per 30 s" in refusal.reason and "between 22:00" in refusal.reason
    assert datetime.fromtimestamp(refusal.until, UTC).astimezone(BEIJING).hour == 8
    refusal = check(CallBudget((CallWindow(2, 600.0),)), [bj(14, 10), bj(14, 10, 3)], bj(14, 10, 5))
    assert refusal is not None and refusal.until == bj(14, 10, 10)
