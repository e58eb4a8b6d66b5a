"""Evaluator and state tracker: probe results → confirmed target and subscription status.

Pure code: no I/O, time comes in as arguments. A target's status changes only
after ``failure_threshold`` bad results in a row (``success_threshold`` good
ones to recover); until then the change is *pending* (Nagios' SOFT state) and
the scheduler probes at ``retry_interval`` to confirm it quickly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from monitor.config import Timing
from monitor.probe import ProbeResult, Status


def observed_status(result: ProbeResult) -> Status:
    """What one result says, before thresholds."""
    if result.plugin_error or result.inconclusive:
        return Status.UNKNOWN
    if not result.success:
        return Status.DOWN
    return Status.DEGRADED if result.degraded else Status.UP


@dataclass(frozen=True, slots=True)
class Transition:
    """A confirmed status change.

    ``at`` is when the new status began: the first result of the streak that
    confirmed it (an outage starts with its first failed probe, not with the
    third); ``confirmed_at`` is when the streak reached its threshold.
    """

    target_id: str
    previous: Status
    current: Status
    at: float
    reason: str
    confirmed_at: float = 0.0


@dataclass(slots=True)
class TargetState:
    status: Status = Status.UNKNOWN
    since: float = 0.0
    failures: int = 0  # consecutive failed probes
    bad: int = 0  # consecutive failed or degraded probes
    good: int = 0  # consecutive up probes
    not_failed: int = 0  # consecutive up or degraded probes
    plugin_errors: int = 0  # consecutive plugin errors
    last_result: ProbeResult | None = None
    last_change_reason: str = ""
    # a target probed from several locations: those that said down at its last change
    down_from: tuple[str, ...] = ()
    # when each streak above began (its first result)
    failures_since: float = 0.0
    bad_since: float = 0.0
    good_since: float = 0.0
    not_failed_since: float = 0.0
    plugin_errors_since: float = 0.0
    # confirmed before a restart (down or degraded): the first probe that agrees confirms
    # it again, instead of a new streak
    restored: Status | None = None

    @property
    def pending(self) -> bool:
        """A change is under way but not yet confirmed: probe at the retry interval."""
        if self.status in (Status.UP, Status.UNKNOWN):
            return self.bad > 0
        if self.status is Status.DOWN:
            return self.not_failed > 0
        return self.good > 0 or self.failures > 0  # degraded: towards up or down


def _decide(state: TargetState, timing: Timing) -> Status:
    """The status the streaks justify (may equal the current one)."""
    fail_n, ok_n = timing.failure_threshold, timing.success_threshold
    current = state.status
    if state.plugin_errors >= fail_n:
        return Status.UNKNOWN
    if state.failures >= fail_n:
        return Status.DOWN
    if current is Status.UNKNOWN and state.last_result is not None:
        # nothing confirmed yet (first probes after start): one good result is enough
        if state.good >= 1:
            return Status.UP
        # what was confirmed before a restart needs no new streak to stay so
        if state.restored is Status.DOWN and state.failures >= 1:
            return Status.DOWN
        if state.restored in (Status.DOWN, Status.DEGRADED) and state.bad >= 1:
            return Status.DEGRADED
        if state.bad >= fail_n:
            return Status.DEGRADED
        return current
    if current is Status.UP:
        return Status.DEGRADED if state.bad >= fail_n else current
    if current is Status.DOWN:
        if state.good >= ok_n:
            return Status.UP
        return Status.DEGRADED if state.not_failed >= ok_n else current
    if current is Status.DEGRADED:
        return Status.UP if state.good >= ok_n else current
    return current


def observe(
    state: TargetState, target_id: str, result: ProbeResult, timing: Timing, now: float
) -> Transition | None:
    """Feed one result into a target's state; return the transition it confirms, if any."""
    seen = observed_status(result)
    if seen is Status.UNKNOWN:
        if not state.plugin_errors:
            state.plugin_errors_since = now
        state.plugin_errors += 1
    else:
        state.plugin_errors = 0
        if seen is Status.DOWN:
            state.failures_since = now if not state.failures else state.failures_since
            state.failures += 1
        else:
            state.failures = 0
        if seen in (Status.DOWN, Status.DEGRADED):
            state.bad_since = now if not state.bad else state.bad_since
            state.bad += 1
        else:
            state.bad = 0
        if seen is Status.UP:
            state.good_since = now if not state.good else state.good_since
            state.good += 1
        else:
            state.good = 0
        if seen is not Status.DOWN:
            state.not_failed_since = now if not state.not_failed else state.not_failed_since
            state.not_failed += 1
        else:
            state.not_failed = 0
    result.share_whole_numbers()  # kept until the next result: see there
    state.last_result = result
    decided = _decide(state, timing)
    if decided is state.status:
        return None
    began = max(_streak_start(state, decided), state.since)
    transition = Transition(target_id, state.status, decided, began, result.reason, now)
    state.status = decided
    state.since = began
    state.last_change_reason = result.reason
    state.restored = None
    return transition


def _streak_start(state: TargetState, decided: Status) -> float:
    """When the streak that justifies ``decided`` began."""
    if decided is Status.UNKNOWN:
        return state.plugin_errors_since
    if decided is Status.DOWN:
        return state.failures_since
    if decided is Status.UP:
        return state.good_since
    # degraded: slow or failing since the first bad result, or working again (slowly)
    # since the first result that did not fail, when it was down
    return state.not_failed_since if state.status is Status.DOWN else state.bad_since


def aggregate(statuses: Iterable[Status], policy: str = "worst") -> Status:
    """A subscription's status from its targets' statuses.

    ``worst``: the worst target decides. ``partial``: down only when every
    check is down; degraded when some are down or degraded.
    """
    values = list(statuses)
    if not values:
        return Status.UNKNOWN
    worst = max(values, key=lambda status: status.severity)
    if (
        policy == "partial"
        and worst is Status.DOWN
        and not all(status is Status.DOWN for status in values)
    ):
        return Status.DEGRADED
    return worst


@dataclass(slots=True)
class SubscriptionState:
    status: Status = Status.UNKNOWN
    since: float = 0.0
    reason: str = ""
    down_from: tuple[str, ...] = ()  # of the target whose reason it shows


@dataclass
class StatusBoard:
    """Current state of every target and subscription (rebuilt on start)."""

    targets: dict[str, TargetState] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], SubscriptionState] = field(default_factory=dict)

    def target(self, target_id: str, now: float) -> TargetState:
        state = self.targets.get(target_id)
        if state is None:
            state = self.targets[target_id] = TargetState(since=now)
        return state

    def restore(self, target_ids: Iterable[str], status: Status) -> None:
        """A status confirmed before a restart: the targets' first probes that agree
        confirm it again at once (see ``TargetState.restored``)."""
        if status not in (Status.DOWN, Status.DEGRADED):
            return
        for target_id in target_ids:
            state = self.targets.get(target_id)
            if state is not None and state.status is Status.UNKNOWN:
                state.restored = status

    def update_subscription(
        self, key: tuple[str, str], target_ids: Iterable[str], policy: str, now: float
    ) -> tuple[Status, Status] | None:
        """Recompute a subscription's status; return (previous, current) if it changed.
        ``now`` is when the change began (the transition's ``at``)."""
        ids = list(target_ids)
        current = aggregate((self.target(i, now).status for i in ids), policy)
        state = self.subscriptions.get(key)
        if state is None:
            state = self.subscriptions[key] = SubscriptionState(since=now)
        if current is state.status:
            return None
        previous = state.status
        state.status, state.since = current, max(now, state.since)
        worst = [self.targets[i] for i in ids if self.targets[i].status is current]
        state.reason = worst[0].last_change_reason if worst else ""
        state.down_from = worst[0].down_from if worst else ()
        return previous, current

    def forget(
        self, target_ids: Iterable[str], subscription_keys: Iterable[tuple[str, str]]
    ) -> None:
        for target_id in target_ids:
            self.targets.pop(target_id, None)
        for key in subscription_keys:
            self.subscriptions.pop(key, None)
