"""Message composition: the pages the incident engine decides, as messages for people.

Each page becomes one message per channel and recipient, rendered from the
templates with the incident's context (its customer, checks, timeline, the
vendor's view, a vendor-side incident's customers). Nothing here writes: the
incident manager stores what this returns, in the transaction of the change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from monitor.catalog import Catalog
from monitor.engine import incidents as engine
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.engine.model import Incident, IncidentEvent, PolicySnapshot
from monitor.engine.oncall import PERSON_PREFIX
from monitor.links import LinkSigner
from monitor.notify.message import RenderedMessage
from monitor.notify.templates import (
    DEFAULT_LANGUAGE,
    AffectedContext,
    FailingCheckContext,
    IncidentContext,
    OnCallContext,
    RenderedParts,
    StepContext,
    TemplateContext,
    TemplateRenderer,
    TemplateRenderError,
    TimelineEntryContext,
    VendorContext,
)
from monitor.notify.voice_plan import Unreachable
from monitor.probe import Status
from monitor.status import StatusBoard
from monitor.vendor import VendorChange, VendorState

log = logging.getLogger(__name__)

FailingChecks = Callable[[str, str], list[FailingCheckContext]]
_STEP_EVENTS = ("opened", "escalated", "vendor_ticket")  # messages for one policy step


def _offers_ack(event: str) -> bool:
    """Events whose messages offer the acknowledge link (alert_templates/README.md)."""
    return event not in ("acknowledged", "resolved")


class Timelines(Protocol):
    """Where the stored timeline of an incident is read (a store transaction)."""

    async def events(self, incident_id: str) -> list[IncidentEvent]: ...


class IncidentsView(Protocol):
    """What the composer needs to know about other incidents (the incident manager)."""

    def blast_radius(self, group: Incident) -> list[Incident]:
        """A vendor-side incident's customers' incidents, recovered ones included."""
        ...

    def announced_customers(self, group: Incident) -> int | None:
        """Customers the previous page of a vendor-side incident named."""
        ...

    def vendor_state(self, customer: str, service: str) -> VendorState | None:
        """What the vendor's feed says of the service (for any affected customer)."""
        ...


def failing_checks(
    catalog: Catalog, board: StatusBoard, customer: str, service: str
) -> list[FailingCheckContext]:
    """A subscription's checks that are not up, with their reasons (for messages)."""
    subscription = catalog.subscriptions.get((customer, service))
    if subscription is None:
        return []
    failing: list[FailingCheckContext] = []
    for target_id in subscription.target_ids:
        state = board.targets.get(target_id)
        if state is None or state.status in (Status.UP, Status.UNKNOWN):
            continue
        spec = catalog.targets[target_id]
        last = state.last_result
        failing.append(
            {
                "check": spec.target.check,
                "type": spec.target.type,
                "status": state.status.value,
                "reason": last.reason if last and last.reason else state.last_change_reason,
                "since": datetime.fromtimestamp(state.since, UTC),
            }
        )
    return failing


def incident_page_url(public_url: str, incident_id: str) -> str:
    """The console's page of an incident: the link every message carries."""
    return f"{public_url.rstrip('/')}/incidents/{incident_id}"


def duration_text(seconds: float) -> str:
    """ "45 s", "2 min 55 s", "1 h 24 min": seconds count while it is under an hour."""
    whole = max(0, int(seconds))
    minutes, secs = divmod(whole, 60)
    if minutes < 1:
        return f"{secs} s"
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def event_text(event: IncidentEvent) -> str:
    """One timeline line: "escalated: level=2, channels=[...]"."""
    detail: dict[str, Any] = event.detail
    parts = [f"{key}={value}" for key, value in detail.items() if value not in (None, "", [])]
    who = f" by {event.actor}" if event.actor else ""
    return f"{event.kind}{who}" + (f": {', '.join(parts)}" if parts else "")


class MessageComposer:
    """Pages → rendered messages, one per channel and recipient."""

    def __init__(
        self,
        renderer: TemplateRenderer,
        signer: LinkSigner,
        view: IncidentsView,
        *,
        failing_checks: FailingChecks,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._renderer = renderer
        self._signer = signer
        self._view = view
        self._failing_checks = failing_checks
        self._wall = wall
        self.catalog: Catalog | None = None
        self._ack_link_ttl = 86400.0

    def configure(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._ack_link_ttl = catalog.config.incidents.ack_link_ttl

    @property
    def renderer(self) -> TemplateRenderer:
        """The templates messages are rendered with now."""
        return self._renderer

    def set_renderer(self, renderer: TemplateRenderer) -> None:
        """Templates re-read on reload (validated by the caller first)."""
        self._renderer = renderer

    def customer_name(self, customer_id: str) -> str:
        customer = self.catalog.customers.get(customer_id) if self.catalog else None
        return customer.name if customer else customer_id

    async def messages(
        self, decision: engine.Decision, timelines: Timelines
    ) -> list[RenderedMessage]:
        """Every page of ``decision``, rendered for each of its channels' recipients."""
        messages: list[RenderedMessage] = []
        for page in decision.pages:
            stored = await timelines.events(page.incident.id) if page.incident.id else []
            timeline = stored + [e for e in decision.events if e.incident_id == page.incident.id]
            incident_context = self.incident_context(page.incident, timeline, page)
            for channel in page.channels:
                # one message per recipient: a retry or a failure concerns one person only
                for person, person_id in self._people(page, channel):
                    language = self.language(channel, person, person_id)
                    context = self._template_context(
                        page, incident_context, person or channel, language
                    )
                    parts = self._render_parts(page, context)
                    key = f"{page.dedup_key}:{channel}" + (f":{person}" if person else "")
                    messages.append(
                        RenderedMessage(
                            dedup_key=key,
                            channel=channel,
                            event=page.event,
                            recipients=(person,) if person else (),
                            subject=parts.subject,
                            text=parts.text,
                            html=parts.html,
                            sms=parts.sms,
                            payload=parts.payload,
                            incident_id=page.incident.id,
                            chat=parts.chat,
                            status=page.incident.status,
                            ack_url=context["ack_url"] if _offers_ack(page.event) else None,
                            incident_url=context["incident_url"],
                            voice=parts.voice,
                            language=language,
                        )
                    )
        return messages

    def language(self, channel: str, person: str, person_id: str | None = None) -> str:
        """The recipient's language, the first that says one: their customer contact's
        (matched by e-mail or phone), the on-call person's (``people``: the one a schedule
        paged, ``person_id``, or one whose address ``person`` is), the channel's, and
        ``notifications.language``."""
        if self.catalog is None:
            return DEFAULT_LANGUAGE
        config = self.catalog.config
        if person:
            for customer in config.customers:
                for contact in customer.contacts:
                    if contact.language and person in (contact.email, contact.phone):
                        return contact.language
        spec = config.people.get(person_id) if person_id else None
        if spec is None and person:
            spec = next((p for p in config.people.values() if person in (p.email, p.phone)), None)
        if spec is not None and spec.language:
            return spec.language
        options = config.channels.get(channel)
        return getattr(options, "language", None) or config.notifications.language

    def voice_unavailable_messages(
        self, page: engine.Page, unreachable: Sequence[Unreachable]
    ) -> list[RenderedMessage]:
        """The NOC lead's notice (``monitor.ops_channels``): nobody of ``page``'s step
        could be called, and why; one message per ops channel and recipient."""
        if self.catalog is None:
            return []
        incident_context = self.incident_context(page.incident, [], page)
        event = "voice_unavailable"
        notice = engine.Page(event, page.incident, (), f"{page.dedup_key}:{event}")
        messages = []
        for channel in self.catalog.config.monitor.ops_channels:
            for person in self._channel_recipients(channel) or ("",):
                language = self.language(channel, person)
                context = self._template_context(
                    notice, incident_context, person or channel, language
                )
                context["unreachable"] = [
                    {"callee": u.callee, "skipped": [f"{c}: {r.reason}" for c, r in u.refusals]}
                    for u in unreachable
                ]
                parts = self._render_parts(notice, context)
                messages.append(
                    RenderedMessage(
                        dedup_key=f"{notice.dedup_key}:{channel}"
                        + (f":{person}" if person else ""),
                        channel=channel,
                        event=event,
                        recipients=(person,) if person else (),
                        subject=parts.subject,
                        text=parts.text,
                        html=parts.html,
                        sms=parts.sms,
                        payload=parts.payload,
                        incident_id=page.incident.id,
                        chat=parts.chat,
                        status=page.incident.status,
                        ack_url=context["ack_url"],
                        incident_url=context["incident_url"],
                        language=language,
                    )
                )
        return messages

    def _render_parts(self, page: engine.Page, context: TemplateContext) -> RenderedParts:
        """The templates' output, or a plain message when an operator's template is broken:
        a page must not be lost to a typo."""
        try:
            return self._renderer.render(page.event, context)
        except TemplateRenderError as exc:
            log.error(
                "event=template_failed template=%r incident=%s action=%r",
                str(exc),
                page.incident.id,
                "fix the template (csp-monitor validate); a plain message was sent instead",
            )
            incident = page.incident
            line = (
                f"{page.event.upper()}: {incident.customer}/{incident.service} is "
                f"{incident.status}: {incident.reason} - {incident.id}"
            )
            link = context["ack_url"]
            text = line + (f"\nAcknowledge: {link}" if link else "")
            return RenderedParts(
                subject=line,
                text=text,
                html=None,
                sms=text,
                chat=text,
                payload={
                    "event": page.event,
                    "incident": incident.id,
                    "status": incident.status,
                    "reason": incident.reason,
                },
            )

    def _people(self, page: engine.Page, channel: str) -> list[tuple[str, str | None]]:
        """Who gets ``page`` on ``channel``, each once, as (address, person id): the step's
        recipients, with the channel's own list in place of ``CHANNEL_RECIPIENTS`` and a
        schedule's person (``person:ID``, their id kept for their language) at their
        address of the channel's kind; ``""`` when the channel has no list of its own (a
        webhook, a file)."""
        people: dict[str, str | None] = {}
        for person in page.recipients.get(channel) or (engine.CHANNEL_RECIPIENTS,):
            person_id = None
            if person.startswith(PERSON_PREFIX):
                person_id = person.removeprefix(PERSON_PREFIX)
                person = self._address(person_id, channel, page)
            if person == engine.CHANNEL_RECIPIENTS:
                for address in self._channel_recipients(channel) or ("",):
                    people.setdefault(address, None)
            elif people.get(person) is None:
                people[person] = person_id
        return list(people.items())

    def _address(self, person_id: str, channel: str, page: engine.Page) -> str:
        """The on-call person's address for ``channel`` (their e-mail for e-mail, phone for
        SMS, chat user id for a chat robot; their id for a webhook or a file); the
        channel's own recipients when the config no longer has it (changed since)."""
        config = self.catalog.config if self.catalog else None
        person = config.people.get(person_id) if config else None
        options = config.channels.get(channel) if config else None
        kind = getattr(options, "recipient_kind", None)
        address = getattr(person, kind, None) if person is not None and kind else person_id
        if person is None or not address:
            log.warning(
                "event=oncall_address_missing incident=%s person=%s channel=%s kind=%s action=%r",
                page.incident.id,
                person_id,
                channel,
                kind,
                "paged the channel's own recipients instead; give the person this address "
                "under people",
            )
            return engine.CHANNEL_RECIPIENTS
        return str(address)

    def _channel_recipients(self, channel: str) -> tuple[str, ...]:
        options = self.catalog.config.channels.get(channel) if self.catalog else None
        return tuple(str(person) for person in getattr(options, "to", ()) or ())

    def _template_context(
        self, page: engine.Page, incident: IncidentContext, recipient: str, language: str
    ) -> TemplateContext:
        public_url = self.catalog.config.monitor.public_url if self.catalog else None
        ack_url = incident_url = None
        if public_url:
            base = public_url.rstrip("/")
            expires = self._wall() + self._ack_link_ttl
            token = self._signer.token(page.incident.id, expires)
            ack_url = f"{base}/ack/{page.incident.id}?t={token}"
            incident_url = incident_page_url(public_url, page.incident.id)
        return {
            "event": page.event,
            "incident": incident,
            "ack_url": ack_url,
            "incident_url": incident_url,
            "recipient": recipient,
            "monitor": {"public_url": public_url, "name": "csp-monitor"},
            "now": datetime.fromtimestamp(self._wall(), UTC),
            "timezone": "Asia/Shanghai",
            "language": language,
            "unreachable": [],
        }

    def draft(
        self,
        event: str,
        incident: Incident,
        timeline: list[IncidentEvent],
        recipient: str,
        language: str = "en",
    ) -> RenderedParts:
        """``event``'s message for ``incident`` as the console shows it (the vendor ticket
        draft): rendered now, in ``language``, with the incident page's link and no
        acknowledge link."""
        public_url = self.catalog.config.monitor.public_url if self.catalog else None
        context: TemplateContext = {
            "event": event,
            "incident": self.incident_context(incident, timeline),
            "ack_url": None,
            "incident_url": incident_page_url(public_url, incident.id) if public_url else None,
            "recipient": recipient,
            "monitor": {"public_url": public_url, "name": "csp-monitor"},
            "now": datetime.fromtimestamp(self._wall(), UTC),
            "timezone": "Asia/Shanghai",
            "language": language,
            "unreachable": [],
        }
        return self._renderer.render(event, context)

    def incident_context(
        self, incident: Incident, timeline: list[IncidentEvent], page: engine.Page | None = None
    ) -> IncidentContext:
        """What templates know of ``incident`` (see alert_templates/README.md)."""
        catalog = self.catalog
        customer = catalog.customers.get(incident.customer) if catalog else None
        service = catalog.services.get(incident.service) if catalog else None
        at = datetime.fromtimestamp
        level = incident.escalation_level
        step: StepContext | None = None
        if page is not None and page.event in _STEP_EVENTS and level:
            after = incident.policy.steps[level - 1].after
            step = {
                "level": level,
                "after_text": "immediately" if after == 0 else f"after {duration_text(after)}",
                "after_seconds": after,
            }
        end = incident.resolved_at or self._wall()
        blast: list[str] = []
        affected: list[AffectedContext] = []
        announced = None
        if incident.customer == VENDOR_CUSTOMER:
            for member in self._view.blast_radius(incident):
                name = self.customer_name(member.customer)
                blast.append(name)
                lasted = (member.resolved_at or end) - member.opened_at
                affected.append(
                    {"name": name, "duration_text": duration_text(lasted), "seconds": lasted}
                )
            announced = self._view.announced_customers(incident)
        return {
            "id": incident.id,
            "customer": {
                "id": incident.customer,
                "name": customer.name if customer else "Several customers (vendor-side outage)",
                "tenant_domain": customer.tenant_domain if customer else "",
                "tier": customer.tier if customer else "",
                "contacts": [
                    {"name": c.name, "role": c.role, "email": c.email, "phone": c.phone}
                    for c in customer.contacts
                ]
                if customer
                else [],
            },
            "service": {
                "id": incident.service,
                "name": service.name if service else incident.service,
            },
            "status": incident.status,
            "severity": incident.severity.value,
            "state": incident.state.value,
            "opened_at": at(incident.opened_at, UTC),
            "since_text": f"for {duration_text(end - incident.opened_at)}",
            "since_seconds": end - incident.opened_at,
            "reason": incident.reason,
            "failing_checks": self._failing_checks(incident.customer, incident.service),
            "escalation_level": level,
            "step": step,
            "acknowledged_by": incident.acknowledged_by,
            "acknowledged_at": at(incident.acknowledged_at, UTC)
            if incident.acknowledged_at
            else None,
            "resolved_at": at(incident.resolved_at, UTC) if incident.resolved_at else None,
            "duration_text": duration_text(end - incident.opened_at)
            if incident.resolved_at
            else None,
            "duration_seconds": end - incident.opened_at if incident.resolved_at else None,
            "flapping": incident.flapping,
            "muted": incident.muted,
            "vendor_case": incident.vendor_case,
            "vendor": self._vendor_context(incident.customer, incident.service),
            "blast_radius": blast,
            "affected": affected,
            "announced_customers": announced,
            "down_from": list(incident.down_from),
            "timeline": [self._timeline_entry(e) for e in timeline],
            "oncall": self._oncall_context(incident),
        }

    def _timeline_entry(self, event: IncidentEvent) -> TimelineEntryContext:
        """A timeline event for templates: its record, and the names of the people a
        step paged (``detail.oncall`` holds their ids)."""
        people = self.catalog.config.people if self.catalog else {}
        picked = event.detail.get("oncall")
        oncall: list[OnCallContext] = []
        for schedule, person in (picked if isinstance(picked, dict) else {}).items():
            spec = people.get(person) if person else None
            oncall.append(
                {
                    "level": int(event.detail.get("level") or 0),
                    "schedule": str(schedule),
                    "person": person,
                    "name": spec.name if spec else person,
                }
            )
        return {
            "at": datetime.fromtimestamp(event.at, UTC),
            "kind": event.kind,
            "text": event_text(event),
            "actor": event.actor,
            "detail": dict(event.detail),
            "oncall": oncall,
        }

    def _oncall_context(self, incident: Incident) -> list[OnCallContext]:
        """Who the incident's steps paged through schedules, with their names as people
        read them (the id when the person is no longer in the config)."""
        people = self.catalog.config.people if self.catalog else {}
        picks: list[OnCallContext] = []
        for pick in incident.oncall:
            spec = people.get(pick.person) if pick.person else None
            name = spec.name if spec else pick.person
            picks.append(
                {
                    "level": pick.level,
                    "schedule": pick.schedule,
                    "person": pick.person,
                    "name": name,
                }
            )
        return picks

    def _vendor_context(self, customer: str, service: str) -> VendorContext | None:
        state = self._view.vendor_state(customer, service)
        if state is None:
            return None
        return {
            "confirmed": True,
            "issue_id": state.issue_id,
            "title": state.title,
            "latest_post": state.latest_post,
        }

    def advisory_messages(
        self, change: VendorChange, policy: PolicySnapshot
    ) -> list[RenderedMessage]:
        """A plain advisory to the first step of the customer's policy: the vendor reports
        a problem our probes do not see."""
        state = change.current
        if not policy.steps:
            return []
        subject = (
            f"[VENDOR ADVISORY] {self.customer_name(change.customer)} / {state.service}: "
            f"21Vianet reports {state.status} ({state.issue_id or state.vendor_status})"
        )
        text = "\n".join(
            filter(
                None,
                [
                    subject,
                    state.title or "",
                    state.latest_post or "",
                    "Our own probes see the service working; no incident is open.",
                ],
            )
        )
        return [
            RenderedMessage(
                dedup_key=f"advisory:{change.customer}:{state.service}:{state.issue_id}:{channel}",
                channel=channel,
                event="vendor_advisory",
                recipients=(),
                subject=subject,
                text=text,
                sms=subject,
                payload={
                    "event": "vendor_advisory",
                    "customer": change.customer,
                    **state.to_json(),
                },
            )
            for channel in policy.steps[0].notify
        ]
