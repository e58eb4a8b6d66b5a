"""Customer updates by e-mail: what our team tells a customer about an incident.

When someone writes a customer update on an incident (the console's incident
page or ``POST /api/v1/incidents/{id}/customer-updates``), each contact of the
customer with ``notify: true`` gets it by e-mail through
``notifications.customer_updates_channel``, in the contact's language, from the
customer-facing templates ``alert_templates/customer_update/``. A vendor-side
incident's update goes to every affected customer's contacts, each message
naming only that customer.

The templates get a context of their own (:class:`CustomerUpdateContext`): only
public facts, chosen one by one — the customer's and the service's names, when
the problem began, the update's state and text. No incident id, check, host
name, reason, note, acknowledge link or other customer is in it, so no template
(ours or an operator's) can leak one. The messages are queued in the outbox in
the transaction that stores the update: a restart loses none and sends none
twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypedDict

from monitor.catalog import Catalog
from monitor.config.models import Contact, CustomerSpec
from monitor.engine.model import Incident
from monitor.notify.message import RenderedMessage
from monitor.notify.templates import (
    RenderedParts,
    TemplateProblem,
    TemplateRenderer,
    TemplateRenderError,
)

EVENT = "customer_update"
STATES = ("investigating", "identified", "monitoring", "resolved")


class NamedContext(TypedDict):
    name: str


class CustomerUpdateContext(TypedDict):
    """Everything a customer-update template may use (public facts only)."""

    event: str  # customer_update
    customer: NamedContext  # the recipient's company, e.g. "Contoso (China) Ltd."
    contact: NamedContext  # the person it is addressed to
    service: NamedContext  # "Exchange Online (operated by 21Vianet)"
    state: str  # investigating, identified, monitoring, resolved
    text: str  # what our team wrote
    started_at: datetime  # aware: when the problem began
    posted_at: datetime  # aware: when the update was written
    timezone: str  # IANA name times are shown in, next to UTC
    language: str  # en or zh-CN: the contact's


def update_context(
    customer: CustomerSpec,
    contact: Contact,
    service_name: str,
    state: str,
    text: str,
    started_at: float,
    posted_at: float,
    timezone: str,
    language: str,
) -> CustomerUpdateContext:
    return CustomerUpdateContext(
        event=EVENT,
        customer={"name": customer.name},
        contact={"name": contact.name},
        service={"name": service_name},
        state=state,
        text=text,
        started_at=datetime.fromtimestamp(started_at, UTC),
        posted_at=datetime.fromtimestamp(posted_at, UTC),
        timezone=timezone,
        language=language,
    )


def sample_update_context(language: str = "en") -> CustomerUpdateContext:
    """A realistic update, for ``csp-monitor validate`` and the template tests."""
    customer = CustomerSpec.model_validate(
        {
            "id": "contoso",
            "name": "Contoso (China) Ltd.",
            "tenant_domain": "contoso.partner.onmschina.cn",
            "subscriptions": [],
        }
    )
    contact = Contact(name="王芳", email="wang.fang@contoso.cn", notify=True)
    started = datetime(2025, 11, 23, 23, 12, tzinfo=UTC).timestamp()
    return update_context(
        customer,
        contact,
        "Exchange Online (operated by 21Vianet)",
        "identified",
        "Outlook on the web does not open for your users; mail delivery is not affected. "
        "21Vianet is working on it and we follow it closely.",
        started,
        started + 25 * 60,
        "Asia/Shanghai",
        language,
    )


def check_update_templates(renderer: TemplateRenderer) -> list[TemplateProblem]:
    """The customer-update templates rendered with the sample, in each language."""
    problems: list[TemplateProblem] = []
    for language in ("en", "zh-CN"):
        try:
            renderer.render(EVENT, sample_update_context(language))
        except TemplateRenderError as exc:
            problems.append(exc.problem)
    return problems


def _render(renderer: TemplateRenderer, context: CustomerUpdateContext) -> RenderedParts:
    try:
        return renderer.render(EVENT, context)
    except TemplateRenderError:
        # an operator's broken template must not lose the update; the plain message
        # carries the same public facts only
        line = f"{context['customer']['name']} / {context['service']['name']}: {context['state']}"
        return RenderedParts(
            subject=line, text=f"{line}\n\n{context['text']}\n", html=None, sms="", payload={}
        )


def _dedup_key(incident_id: str, posted_at: float, customer: str, email: str) -> str:
    """Unique per update and contact, and opaque: an e-mail carries its key in a header
    (``X-CSP-Monitor-Dedup``), where the customer must not read an incident id."""
    unique = f"{incident_id}|{posted_at:.6f}|{customer}|{email}"
    return f"{EVENT}:{hashlib.sha256(unique.encode()).hexdigest()[:32]}"


def recipients(customer: CustomerSpec) -> list[Contact]:
    """The customer's contacts who get its updates, each address once."""
    seen: dict[str, Contact] = {}
    for contact in customer.contacts:
        if contact.notify and contact.email and contact.email not in seen:
            seen[contact.email] = contact
    return list(seen.values())


def update_messages(
    renderer: TemplateRenderer,
    catalog: Catalog,
    incident: Incident,
    customers: Sequence[str],
    state: str,
    text: str,
    posted_at: float,
) -> list[RenderedMessage]:
    """One e-mail per contact with ``notify: true`` of each of ``customers`` (the
    incident's customer, or a vendor-side incident's affected customers); [] when no
    channel is configured."""
    config = catalog.config
    channel = config.notifications.customer_updates_channel
    if not channel:
        return []
    options = config.channels.get(channel)
    service = catalog.services.get(incident.service)
    service_name = service.name if service else incident.service
    messages = []
    for customer_id in dict.fromkeys(customers):
        customer = catalog.customers.get(customer_id)
        if customer is None:
            continue
        for contact in recipients(customer):
            language = (
                contact.language
                or getattr(options, "language", None)
                or config.notifications.language
            )
            context = update_context(
                customer,
                contact,
                service_name,
                state,
                text,
                incident.opened_at,
                posted_at,
                config.reports.timezone,
                language,
            )
            parts = _render(renderer, context)
            messages.append(
                RenderedMessage(
                    dedup_key=_dedup_key(incident.id, posted_at, customer.id, str(contact.email)),
                    channel=channel,
                    event=EVENT,
                    recipients=(str(contact.email),),
                    subject=parts.subject,
                    text=parts.text,
                    html=parts.html,
                    sms=parts.sms,
                    # nothing internal for a webhook or file either: the public facts
                    payload={
                        "event": EVENT,
                        "customer": customer.name,
                        "service": service_name,
                        "state": state,
                        "text": text,
                    },
                    language=language,
                )
            )
    return messages
