"""Microsoft 365 Message Center posts, across the customer tenants that received them.

The ``m365_messages`` check reads each tenant's posts (planned changes, fixes,
announcements). One post (``MC123456``) usually reaches many customers: this board keeps
one copy per post, the customers it reached, and its latest version (by
``lastModifiedDateTime``). A post with a date window in the planned-change sense
(category ``planForChange`` with a start and an end) becomes a **proposed** maintenance
window for the subscriptions it concerns: never applied here. An operator confirms it
(API or CLI), and only then is it a maintenance window, so SLA exclusions stay a human
decision. Plain Python, no I/O: the daemon feeds it and reads it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("preventOrFixIssue", "planForChange", "stayInformed")
SEVERITIES = ("normal", "high", "critical")
_CANONICAL = {value.lower(): value for value in CATEGORIES + SEVERITIES}


def canonical(value: Any, allowed: tuple[str, ...]) -> str:
    """Graph's enum value in camelCase whichever casing came (``PlanForChange``,
    ``planForChange``); ``unknownFutureValue`` for one this version does not know."""
    text = _CANONICAL.get(str(value).lower()) if isinstance(value, str) else None
    return text if text in allowed else "unknownFutureValue"


@dataclass(frozen=True, slots=True)
class VendorMessage:
    """One Message Center post as one tenant sees it."""

    id: str
    title: str
    category: str  # one of CATEGORIES, or unknownFutureValue
    severity: str  # one of SEVERITIES, or unknownFutureValue
    services: tuple[str, ...]  # our catalog services the post concerns
    vendor_services: tuple[str, ...]  # Graph's names for them
    last_modified: float
    start: float | None = None
    end: float | None = None
    action_required_by: float | None = None
    major_change: bool = False

    @property
    def proposes_window(self) -> bool:
        """A planned change with a date window: a maintenance window to propose."""
        return (
            self.category == "planForChange"
            and self.start is not None
            and self.end is not None
            and self.end > self.start
            and bool(self.services)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "category": self.category,
            "severity": self.severity,
            "services": list(self.services),
            "vendor_services": list(self.vendor_services),
            "last_modified": self.last_modified,
            "start": self.start,
            "end": self.end,
            "action_required_by": self.action_required_by,
            "major_change": self.major_change,
        }


@dataclass(frozen=True, slots=True)
class ProposedWindow:
    """A maintenance window a post suggests, for each customer × service it concerns."""

    message_id: str
    title: str
    starts_at: float
    ends_at: float
    subscriptions: tuple[tuple[str, str], ...]  # (customer, service)


@dataclass
class _Post:
    message: VendorMessage
    customers: set[str] = field(default_factory=set)


@dataclass
class MessageBoard:
    """Every post read, once, with the customers that received it."""

    posts: dict[str, _Post] = field(default_factory=dict)

    def update(self, customer: str, messages: list[VendorMessage]) -> list[VendorMessage]:
        """What one tenant's read lists now; returns the posts that are new or changed."""
        changed = []
        listed = {message.id for message in messages}
        for message in messages:
            post = self.posts.get(message.id)
            if post is None:
                post = self.posts[message.id] = _Post(message)
                changed.append(message)
            elif message.last_modified > post.message.last_modified:
                post.message = message  # a later version (new dates, new text)
                changed.append(message)
            post.customers.add(customer)
        for post_id, post in list(self.posts.items()):  # gone from this tenant's list
            if customer in post.customers and post_id not in listed:
                post.customers.discard(customer)
                if not post.customers:
                    del self.posts[post_id]
        return changed

    def for_customer(self, customer: str) -> list[VendorMessage]:
        """The customer's posts, those with the earliest action-required date first."""
        found = [p.message for p in self.posts.values() if customer in p.customers]
        return sorted(found, key=_action_order)

    def customers_of(self, message_id: str) -> list[str]:
        post = self.posts.get(message_id)
        return sorted(post.customers) if post else []

    def counts(self) -> Counter[tuple[str, str, str]]:
        """Posts per (customer, category, severity): ``csp_monitor_vendor_messages``."""
        counted: Counter[tuple[str, str, str]] = Counter()
        for post in self.posts.values():
            for customer in post.customers:
                counted[(customer, post.message.category, post.message.severity)] += 1
        return counted

    def proposal(self, message_id: str) -> ProposedWindow | None:
        post = self.posts.get(message_id)
        if post is None or not post.message.proposes_window:
            return None
        message = post.message
        assert message.start is not None and message.end is not None
        return ProposedWindow(
            message.id,
            message.title,
            message.start,
            message.end,
            tuple(
                (customer, service)
                for customer in sorted(post.customers)
                for service in message.services
            ),
        )

    def proposals(self) -> list[ProposedWindow]:
        """Every window the posts propose, earliest first (whether an operator confirmed
        one is the store's to say: see ``window_reason``)."""
        found = [proposal for message_id in self.posts if (proposal := self.proposal(message_id))]
        return sorted(found, key=lambda proposal: (proposal.starts_at, proposal.message_id))


def window_reason(proposal: ProposedWindow) -> str:
    """The reason of the maintenance windows a confirmation creates: it names the post,
    so that any node (and a restarted one) can tell the proposal was confirmed."""
    return f"{proposal.message_id}: {proposal.title}"[:200]


def _action_order(message: VendorMessage) -> tuple[bool, float, str]:
    when = message.action_required_by
    return (when is None, when or 0.0, message.id)
