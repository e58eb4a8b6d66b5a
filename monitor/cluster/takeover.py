"""Taking subscriptions over from another node: start from the status it left in the store.

A node that takes a subscription over (a member left or joined) must not
begin at ``unknown``: that would record a gap that never was, and a first bad
result would look like a new outage. Its targets begin in the subscription's
last recorded status instead, so the thresholds apply from there exactly as
they did on the previous owner: no flip, no new incident, unless the
service really changed.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.catalog import Catalog
from monitor.probe import Status
from monitor.status import StatusBoard, SubscriptionState

Key = tuple[str, str]
# Statuses a probe confirmed; unknown and maintenance say nothing about the service itself.
_CONFIRMED = {Status.UP.value, Status.DEGRADED.value, Status.DOWN.value}


def seed_board(
    board: StatusBoard,
    catalog: Catalog,
    statuses: Mapping[Key, tuple[str, float]],
    now: float,
) -> list[Key]:
    """Put each subscription's last recorded status on its targets; return those seeded."""
    seeded: list[Key] = []
    for key, (status, since) in statuses.items():
        subscription = catalog.subscriptions.get(key)
        if subscription is None or status not in _CONFIRMED:
            continue
        value = Status(status)
        for target_id in subscription.target_ids:
            state = board.target(target_id, now)
            state.status, state.since = value, since
        board.subscriptions[key] = SubscriptionState(value, since, "")
        seeded.append(key)
    return seeded
