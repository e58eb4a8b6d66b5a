"""The blindness verdict from canary rounds and the burst that asks for one: tables with a
fake clock."""

from __future__ import annotations

import pytest

from monitor.sight import CanaryOutcome, Sight, SightChange, SightSettings, round_failed

OK = CanaryOutcome("gateway", True)
FAIL = CanaryOutcome("resolver", False, "timeout after 5s")


def round_of(failed: int, passed: int) -> list[CanaryOutcome]:
    return [FAIL] * failed + [OK] * passed


@pytest.mark.parametrize(
    ("failed", "passed", "fails"),
    [(0, 3, False), (1, 2, False), (2, 1, True), (3, 0, True), (1, 1, False), (1, 0, True)],
)
def test_a_round_fails_when_most_canaries_fail(failed: int, passed: int, fails: bool) -> None:
    assert round_failed(round_of(failed, passed)) is fails


def test_no_canaries_never_fail() -> None:
    assert not round_failed([])
    sight = Sight()
    assert sight.round_finished([], 0.0) is None and not sight.pending()


# rounds: (failed, passed) per round, at t = 0, 30, 60 …; expected change after each
@pytest.mark.parametrize(
    ("rounds", "changes", "blind_since"),
    [
        ([(2, 1), (2, 1)], [None, "blind"], 0.0),
        ([(2, 1), (0, 3), (2, 1)], [None, None, None], None),  # not two in a row
        ([(3, 0), (3, 0), (3, 0)], [None, "blind", None], 0.0),  # said once
        ([(0, 3), (2, 1), (3, 0)], [None, None, "blind"], 30.0),  # since its first failing round
        ([(2, 1), (2, 1), (0, 3), (0, 3)], [None, "blind", None, "sight_restored"], None),
        ([(2, 1), (2, 1), (0, 3), (2, 1), (0, 3)], [None, "blind", None, None, None], 0.0),
    ],
)
def test_two_failing_rounds_in_a_row_make_the_node_blind_and_two_passing_ones_end_it(
    rounds: list[tuple[int, int]], changes: list[str | None], blind_since: float | None
) -> None:
    sight = Sight(SightSettings(rounds=2))
    seen = []
    for index, (failed, passed) in enumerate(rounds):
        change = sight.round_finished(round_of(failed, passed), started_at=index * 30.0)
        seen.append(change.value if isinstance(change, SightChange) else None)
    assert seen == changes
    assert sight.blind_since == blind_since


def test_a_failing_round_leaves_the_verdict_pending_until_it_is_confirmed_or_refuted() -> None:
    sight = Sight()
    assert not sight.pending()
    sight.round_finished(round_of(2, 1), 0.0)
    assert sight.pending()  # confirmations to down wait
    sight.round_finished(round_of(2, 1), 10.0)
    assert sight.blind and not sight.pending()  # decided: blind
    sight = Sight()
    sight.round_finished(round_of(2, 1), 0.0)
    sight.round_finished(round_of(0, 3), 10.0)
    assert not sight.pending()  # decided: the node sees


# failures: (seconds, service); burst_services 3 within 60 s
@pytest.mark.parametrize(
    ("failures", "burst_at"),
    [
        ([(0, "exchange"), (1, "exchange"), (2, "exchange"), (3, "exchange")], None),  # one service
        ([(0, "exchange"), (5, "sharepoint"), (9, "portal")], 9),
        ([(0, "exchange"), (5, "sharepoint"), (70, "portal")], None),  # the first left the window
        ([(0, "exchange"), (5, "sharepoint"), (6, "sharepoint"), (50, "portal")], 50),
    ],
)
def test_a_burst_is_failures_of_several_distinct_services_within_the_window(
    failures: list[tuple[float, str]], burst_at: float | None
) -> None:
    sight = Sight(SightSettings(burst_services=3, burst_window=60.0))
    bursts = [at for at, service in failures if sight.failure_seen(service, at)]
    assert bursts == ([burst_at] if burst_at is not None else [])
    assert sight.pending() is (burst_at is not None)
    assert not sight.blind  # a burst never makes the node blind by itself


def test_a_burst_is_settled_by_a_passing_round_that_started_after_it() -> None:
    sight = Sight(SightSettings(burst_services=2))
    sight.failure_seen("exchange", 100.0)
    assert sight.failure_seen("portal", 101.0)
    sight.round_finished(round_of(0, 3), started_at=95.0)  # began before the burst
    assert sight.pending()
    sight.round_finished(round_of(0, 3), started_at=101.5)
    assert not sight.pending() and not sight.blind  # the canaries see: the failures are real
    # the same burst does not ask again at once; new failures may
    assert not sight.failure_seen("exchange", 102.0)
    assert sight.failure_seen("sharepoint", 103.0)


def test_a_burst_then_failing_canaries_make_the_node_blind() -> None:
    sight = Sight(SightSettings(burst_services=2))
    sight.failure_seen("exchange", 0.0)
    sight.failure_seen("portal", 1.0)
    assert sight.round_finished(round_of(3, 0), 1.0) is None
    assert sight.pending()
    assert sight.round_finished(round_of(3, 0), 11.0) is SightChange.BLIND
    assert sight.blind_since == 1.0
    assert not sight.failure_seen("sharepoint", 12.0)  # no bursts while blind


def test_removing_the_canaries_ends_a_blindness_and_any_pending_verdict() -> None:
    sight = Sight()
    sight.round_finished(round_of(3, 0), 0.0)
    assert sight.pending()
    assert sight.without_canaries() is None and not sight.pending()
    sight.round_finished(round_of(3, 0), 0.0)
    sight.round_finished(round_of(3, 0), 10.0)
    assert sight.without_canaries() is SightChange.SIGHT_RESTORED
    assert not sight.blind and not sight.pending()
