"""The incident engine: subscription status changes and time in, decisions out.

Pure code. Each function takes an incident (mutated in place), the time, and
what happened, and returns a ``Decision``: the timeline events to store and
the pages to send. The daemon persists a decision in one transaction (the
incident, its events and the outbox rows), so a crash never leaves an
incident changed without its pages queued, and the dedup keys below make a
page that is decided twice be sent once.

Escalation is time-driven: ``tick()`` compares the persisted
``next_escalation_at`` / ``next_reminder_at`` with the clock. After a restart
(even ``kill -9``) the next tick sends whatever fell due while the daemon was
away, once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.engine.correlation import BlastHistory, UpdateRule, group_reason
from monitor.engine.model import (
    EscalationStep,
    Incident,
    IncidentEvent,
    IncidentState,
    OnCallPick,
    PolicySnapshot,
    Severity,
)
from monitor.engine.oncall import PERSON_PREFIX, schedule_name
from monitor.probe import Status

VENDOR_TICKET = "vendor_ticket"
_RANK = {Severity.MINOR: 0, Severity.MAJOR: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class Page:
    """A notification to send to some channels about one incident."""

    event: str  # opened, escalated, severity, reminder, acknowledged, resolved, vendor_ticket
    incident: Incident  # a snapshot as it was when the page was decided
    channels: tuple[str, ...]
    dedup_key: str  # the same page decided twice is sent once
    detail: str = ""
    recipients: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # by channel


@dataclass(slots=True)
class Decision:
    events: list[IncidentEvent] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.pages)

    def merge(self, other: Decision) -> Decision:
        self.events += other.events
        self.pages += other.pages
        return self

    def event(
        self, incident: Incident, at: float, kind: str, actor: str | None = None, **detail: Any
    ) -> None:
        incident.updated_at = at
        self.events.append(IncidentEvent(incident.id, at, kind, detail, actor))

    def page(
        self,
        incident: Incident,
        event: str,
        targets: Mapping[str, tuple[str, ...]],
        key: str,
        detail: str = "",
    ) -> None:
        """Page ``targets`` (channel → recipients; empty: the channel's own list)."""
        if not targets:
            return
        incident.notified = True
        self.pages.append(
            Page(
                event,
                copy.copy(incident),
                tuple(targets),
                f"{incident.id}:{key}",
                detail,
                dict(targets),
            )
        )


def severity_for(status: Status) -> Severity:
    return Severity.MAJOR if status is Status.DOWN else Severity.MINOR


CHANNEL_RECIPIENTS = ""
"""Stands for a channel's own recipients (its ``to``) among a page's recipients: a step
that names nobody pages them, and they stay in the audience when steps are merged."""


OnCallLookup = Callable[[str, float], str | None]
"""Who is on call in a schedule at a time (a person id), or None: see ``engine/oncall.py``."""


def nobody_on_call(schedule: str, at: float) -> str | None:
    """The lookup when no schedule is configured."""
    return None


def _step_people(
    incident: Incident, level: int, step: EscalationStep, channel: str
) -> tuple[str, ...]:
    """A step's recipients on ``channel`` with each ``schedule:X`` replaced by the person
    it paged (``person:ID``), or by the channel's own recipients when nobody was on call."""
    picked = {pick.schedule: pick.person for pick in incident.oncall if pick.level == level}
    people: list[str] = []
    for recipient in step.recipients_for(channel) or (CHANNEL_RECIPIENTS,):
        schedule = schedule_name(recipient)
        if schedule is None:
            people.append(recipient)
        elif picked.get(schedule) is None:
            people.append(CHANNEL_RECIPIENTS)
        else:
            people.append(f"{PERSON_PREFIX}{picked[schedule]}")
    return tuple(people)


def _targets(incident: Incident, levels: Iterable[int]) -> dict[str, tuple[str, ...]]:
    """Channel → recipients over some steps (1-based levels), each recipient once; a step
    without ``recipients`` contributes the channel's own (``CHANNEL_RECIPIENTS``)."""
    merged: dict[str, dict[str, None]] = {}
    for level in levels:
        step = incident.policy.steps[level - 1]
        for channel in step.notify:
            people = _step_people(incident, level, step, channel)
            merged.setdefault(channel, {}).update(dict.fromkeys(people))
    return {channel: tuple(people) for channel, people in merged.items()}


def notified_channels(incident: Incident) -> dict[str, tuple[str, ...]]:
    """Everyone a step already reached: they all hear about ack and resolution."""
    return _targets(incident, range(1, incident.escalation_level + 1))


def _current_channels(incident: Incident) -> dict[str, tuple[str, ...]]:
    """The people of the highest step reached (a vendor ticket desk gets no reminders)."""
    for level in range(incident.escalation_level, 0, -1):
        if incident.policy.steps[level - 1].action != VENDOR_TICKET:
            return _targets(incident, [level])
    return {}


def _pick_oncall(
    incident: Incident, level: int, step: EscalationStep, now: float, oncall: OnCallLookup
) -> dict[str, str | None]:
    """Who each of the step's schedules has on call now, recorded on the incident."""
    picks = {
        name: oncall(name, now)
        for name in dict.fromkeys(schedule_name(r) for r in step.all_recipients())
        if name is not None
    }
    kept = tuple(pick for pick in incident.oncall if pick.level != level)
    incident.oncall = kept + tuple(OnCallPick(level, s, p) for s, p in picks.items())
    return picks


def open_incident(
    incident_id: str,
    customer: str,
    service: str,
    status: Status,
    reason: str,
    policy: PolicySnapshot,
    now: float,
    *,
    muted: bool = False,
    why: str = "",
    hold: float = 0.0,
    started_at: float | None = None,
    oncall: OnCallLookup = nobody_on_call,
    down_from: tuple[str, ...] = (),
) -> tuple[Incident, Decision]:
    """A subscription left ``up``: open an incident and send what is due at once.

    ``hold`` delays the first page (as Alertmanager's group_wait does) so that a
    vendor-wide outage can be grouped into one page before anyone is paged.
    ``started_at`` is when the outage began (its first failed probe; default ``now``,
    the confirmation): the incident's ``opened_at``, the "since" every message shows.
    Escalation steps count from the confirmation, when the first page can go out.
    ``down_from``: the probe locations that said down (see ``Incident.down_from``).
    """
    first_after = policy.steps[0].after if policy.steps else None
    incident = Incident(
        id=incident_id,
        customer=customer,
        service=service,
        status=status,
        severity=severity_for(status),
        state=IncidentState.OPEN,
        opened_at=now if started_at is None else min(started_at, now),
        policy=policy,
        reason=reason,
        muted=muted,
        updated_at=now,
        down_from=down_from,
        next_escalation_at=None if first_after is None else now + first_after + hold,
    )
    decision = Decision()
    decision.event(
        incident,
        now,
        "opened",
        status=status,
        reason=reason,
        severity=incident.severity.value,
        policy=policy.name,
        muted=muted,
        **({"why": why} if muted and why else {}),
        **_located(down_from),
    )
    return incident, decision.merge(tick(incident, now, oncall=oncall))


def _located(down_from: tuple[str, ...]) -> dict[str, Any]:
    """A timeline event's detail naming the probe locations that said down, if any."""
    return {"down_from": list(down_from)} if down_from else {}


def missing_incidents(
    statuses: Mapping[tuple[str, str], Status], open_incidents: Container[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Subscriptions down or degraded without an open incident: each must get one
    (maintenance decides whether it pages, not whether it exists)."""
    return [
        key
        for key, status in statuses.items()
        if status in (Status.DOWN, Status.DEGRADED) and key not in open_incidents
    ]


def status_changed(
    incident: Incident, status: Status, reason: str, now: float, down_from: tuple[str, ...] = ()
) -> Decision:
    """The subscription is still not up, but its status changed (degraded ↔ down), or the
    probe locations that say down did (``down_from``)."""
    decision = Decision()
    if status == incident.status and down_from == incident.down_from:
        return decision
    incident.status, incident.reason, incident.down_from = status, reason, down_from
    decision.event(incident, now, "status", status=status, reason=reason, **_located(down_from))
    wanted = severity_for(status)
    if _RANK[wanted] > _RANK[incident.severity]:
        incident.severity = wanted
        decision.event(
            incident, now, "severity", severity=wanted.value, status=status, why=f"now {status}"
        )
        if incident.state is IncidentState.OPEN and not _silenced(incident):
            decision.page(
                incident,
                "severity",
                _current_channels(incident),
                f"severity:{wanted.value}",
                f"now {status}: {reason}",
            )
    return decision


def recovered(
    incident: Incident, now: float, *, flapping: bool = False, up_since: float | None = None
) -> Decision:
    """The subscription is up again (its success threshold met at ``now``; up since
    ``up_since``, the first good probe of that streak)."""
    if flapping:
        # a flapping service resolves only once it has been stable (see tick)
        incident.recovering_since = now
        decision = Decision()
        decision.event(incident, now, "recovering", flapping=True)
        return decision
    return resolve(incident, now, note="service recovered", ended_at=up_since)


def resolve(
    incident: Incident,
    now: float,
    *,
    actor: str | None = None,
    note: str = "",
    ended_at: float | None = None,
) -> Decision:
    """Close the incident; everyone who was told hears it is over, muted or not.
    ``ended_at``: when the outage ended, if before ``now`` (the incident's duration)."""
    decision = Decision()
    if incident.state is IncidentState.RESOLVED:
        return decision
    incident.state = IncidentState.RESOLVED
    end = now if ended_at is None else min(now, ended_at)
    incident.resolved_at = max(end, incident.opened_at)
    incident.next_escalation_at = incident.next_reminder_at = None
    incident.recovering_since = None
    decision.event(incident, now, "resolved", actor, note=note)
    if incident.notified:
        decision.page(
            incident, "resolved", notified_channels(incident), f"resolved:{int(now)}", note
        )
    return decision


def reopen(
    incident: Incident,
    status: Status,
    reason: str,
    now: float,
    *,
    oncall: OnCallLookup = nobody_on_call,
    down_from: tuple[str, ...] = (),
) -> Decision:
    """A relapse within the cool-down: the same incident again, not a new one."""
    decision = Decision()
    incident.state = IncidentState.OPEN
    incident.resolved_at = None
    incident.acknowledged_at = incident.acknowledged_by = None
    incident.status, incident.reason, incident.down_from = status, reason, down_from
    incident.severity = max(incident.severity, severity_for(status), key=_RANK.__getitem__)
    decision.event(incident, now, "reopened", status=status, reason=reason)
    if incident.notified and not _silenced(incident):
        decision.page(
            incident,
            "opened",
            notified_channels(incident),
            f"reopened:{int(now)}",
            "relapse after recovery",
        )
        _arm_reminder(incident, now)
    steps = incident.policy.steps
    if incident.escalation_level < len(steps):
        incident.next_escalation_at = now + _gap(incident.policy, incident.escalation_level)
    return decision.merge(tick(incident, now, oncall=oncall))


def acknowledge(incident: Incident, actor: str, now: float) -> Decision:
    """Someone owns it: escalation and reminders stop until the ack times out."""
    decision = Decision()
    if incident.state is not IncidentState.OPEN:
        return decision
    incident.state = IncidentState.ACKNOWLEDGED
    incident.acknowledged_at, incident.acknowledged_by = now, actor
    incident.next_reminder_at = None
    decision.event(incident, now, "acknowledged", actor)
    decision.page(
        incident,
        "acknowledged",
        notified_channels(incident),
        f"ack:{int(now)}",
        f"acknowledged by {actor}",
    )
    return decision


def set_muted(
    incident: Incident,
    muted: bool,
    now: float,
    why: str = "",
    *,
    oncall: OnCallLookup = nobody_on_call,
) -> Decision:
    """A maintenance window or a failing dependency started or stopped holding back
    this subscription's pages."""
    decision = Decision()
    if incident.muted == muted or incident.state is IncidentState.RESOLVED:
        return decision
    incident.muted = muted
    decision.event(incident, now, "muted" if muted else "unmuted", why=why)
    if not muted:
        # the policy starts over from the step it had reached, now
        if incident.escalation_level < len(incident.policy.steps):
            incident.next_escalation_at = now
        decision.merge(tick(incident, now, oncall=oncall))
    return decision


def join_vendor_group(incident: Incident, group_id: str, now: float) -> Decision:
    """Part of a vendor-side outage: the group pages once; this record stays for the SLA."""
    decision = Decision()
    if incident.vendor_group == group_id:
        return decision
    incident.vendor_group = group_id
    decision.event(incident, now, "grouped", vendor_incident=group_id)
    return decision


def group_grew(
    incident: Incident,
    names: Sequence[str],
    now: float,
    history: BlastHistory,
    rule: UpdateRule,
) -> Decision:
    """A vendor-side incident's customers (``names``, everyone affected so far): its
    reason and timeline follow the group as it grows, and the people already paged get
    one update when it grew substantially since their last page (see ``UpdateRule``)."""
    decision = Decision()
    if incident.state is IncidentState.RESOLVED:
        return decision
    count = len(names)
    if count > history.count:
        incident.reason = group_reason(names, incident.down_from)
        decision.event(incident, now, "blast_radius", customers=count, previously=history.count)
    if incident.notified and not _silenced(incident):
        if rule.due(history.announced, count, history.announced_at, now):
            decision.event(incident, now, "updated", customers=count, previously=history.announced)
            decision.page(incident, "updated", notified_channels(incident), f"updated:{count}")
    return decision


def set_vendor_case(incident: Incident, case: str, actor: str, now: float) -> Decision:
    decision = Decision()
    incident.vendor_case = case
    decision.event(incident, now, "vendor_case", actor, case=case)
    return decision


def vendor_confirmed(
    incident: Incident, issue_id: str | None, title: str | None, source: str, now: float
) -> Decision:
    """The vendor's own health feed reports the same problem: the incident is confirmed."""
    decision = Decision()
    if incident.state is IncidentState.RESOLVED or incident.vendor_issue == (issue_id or source):
        return decision
    incident.vendor_issue = issue_id or source
    decision.event(incident, now, "vendor_confirmed", issue_id=issue_id, title=title, source=source)
    return decision


def add_note(incident: Incident, text: str, actor: str, now: float) -> Decision:
    decision = Decision()
    decision.event(incident, now, "note", actor, text=text)
    return decision


CUSTOMER_UPDATE = "customer_update"
CUSTOMER_UPDATE_STATES = ("investigating", "identified", "monitoring", "resolved")


def customer_update(incident: Incident, state: str, text: str, actor: str, now: float) -> Decision:
    """What our team tells the customer (their status page, their monthly report): a
    timeline event of its own kind, so that it is stored, audited and never mistaken
    for an internal note. Allowed on resolved incidents too: the root cause is often
    written after recovery."""
    if state not in CUSTOMER_UPDATE_STATES:
        raise ValueError(f"state must be one of {', '.join(CUSTOMER_UPDATE_STATES)}")
    decision = Decision()
    decision.event(incident, now, CUSTOMER_UPDATE, actor, state=state, text=text)
    return decision


def _silenced(incident: Incident) -> bool:
    """Muted by maintenance or represented by its vendor-side group."""
    return incident.muted or incident.vendor_group is not None


def _gap(policy: PolicySnapshot, level: int) -> float:
    """Delay between step ``level - 1`` and step ``level``."""
    if level == 0:
        return policy.steps[0].after
    return max(0.0, policy.steps[level].after - policy.steps[level - 1].after)


def _arm_reminder(incident: Incident, now: float) -> None:
    repeat = incident.policy.repeat_interval
    incident.next_reminder_at = now + repeat if repeat else None


def tick(
    incident: Incident,
    now: float,
    *,
    stable: bool = True,
    oncall: OnCallLookup = nobody_on_call,
) -> Decision:
    """Everything time makes due: ack timeout, severity, escalation steps, reminders.

    ``stable`` is false while the subscription is still flapping; a flapping
    incident that recovered resolves on the first tick after it is stable
    for the policy's cool-down (the caller decides the cool-down).
    ``oncall`` says who a step's ``schedule:X`` pages when the step fires.
    """
    decision = Decision()
    if incident.state is IncidentState.RESOLVED:
        return decision
    policy = incident.policy
    if incident.recovering_since is not None and stable:
        return decision.merge(resolve(incident, now, note="service stable again"))
    if (
        incident.state is IncidentState.ACKNOWLEDGED
        and policy.ack_timeout
        and incident.acknowledged_at is not None
        and now >= incident.acknowledged_at + policy.ack_timeout
    ):
        incident.state = IncidentState.OPEN
        decision.event(incident, now, "ack_expired", previous_owner=incident.acknowledged_by)
        incident.acknowledged_at = incident.acknowledged_by = None
        if incident.escalation_level < len(policy.steps):
            incident.next_escalation_at = now  # re-armed: the next step is due now
        elif incident.notified:
            decision.page(
                incident,
                "reminder",
                _current_channels(incident),
                f"ack_expired:{int(now)}",
                "acknowledgement expired",
            )
        _arm_reminder(incident, now)
    if (
        policy.escalate_after is not None
        and incident.severity is not Severity.CRITICAL
        and now >= incident.opened_at + policy.escalate_after
    ):
        incident.severity = Severity.CRITICAL
        decision.event(
            incident,
            now,
            "severity",
            severity=Severity.CRITICAL.value,
            status=incident.status,
            after=policy.escalate_after,  # templates word it; `why` is the record
            why=f"{incident.status} for longer than {int(policy.escalate_after)} s",
        )
        if incident.state is IncidentState.OPEN and not _silenced(incident):
            if incident.escalation_level < len(policy.steps):
                incident.next_escalation_at = min(incident.next_escalation_at or now, now)
            else:
                # every step was paged already: say what changed, once, to the last people
                decision.page(
                    incident,
                    "severity",
                    _current_channels(incident),
                    "severity:critical",
                    f"{incident.status} for too long",
                )
    if incident.state is not IncidentState.OPEN or _silenced(incident):
        return decision
    while (
        incident.next_escalation_at is not None
        and now >= incident.next_escalation_at
        and incident.escalation_level < len(policy.steps)
    ):
        level = incident.escalation_level
        step = policy.steps[level]
        due_at = incident.next_escalation_at
        event = (
            VENDOR_TICKET
            if step.action == VENDOR_TICKET
            else ("opened" if level == 0 else "escalated")
        )
        incident.escalation_level = level + 1
        picks = _pick_oncall(incident, level + 1, step, now, oncall)
        who: dict[str, Any] = {"oncall": picks} if picks else {}  # the timeline says who
        decision.event(
            incident,
            now,
            "paged" if level == 0 else "escalated",
            level=level + 1,
            channels=list(step.notify),
            action=step.action,
            **who,
        )
        decision.page(incident, event, _targets(incident, [level + 1]), f"step:{level}")
        incident.next_escalation_at = (
            due_at + _gap(policy, level + 1) if level + 1 < len(policy.steps) else None
        )
        _arm_reminder(incident, now)
    if (
        incident.next_reminder_at is not None
        and now >= incident.next_reminder_at
        and incident.notified
    ):
        decision.event(incident, now, "reminder")
        decision.page(
            incident,
            "reminder",
            _current_channels(incident),
            f"reminder:{int(incident.next_reminder_at)}",
        )
        repeat = policy.repeat_interval or 0.0
        while repeat and incident.next_reminder_at <= now:  # one reminder, not a backlog
            incident.next_reminder_at += repeat
    return decision
