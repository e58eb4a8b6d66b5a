"""The incident page (the link in every message), its actions, and the incidents list.

Every action goes through the same ``IncidentOperations`` the API uses, with the
signed-in person as the actor: it lands in the timeline and the audit chain
exactly as an API call would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from monitor.api.incidents import incident_operations
from monitor.api.input import NOTE_MAX_CHARS, VENDOR_CASE_MAX_CHARS, clean_text
from monitor.api.services import SERVICES, IncidentOperations
from monitor.console.access import (
    Visitor,
    as_exception,
    form_of,
    render,
    require_operate,
    require_visitor,
)
from monitor.console.board import subscription_checks
from monitor.console.pages import base_path
from monitor.console.status_page import status_path
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.engine.incidents import CUSTOMER_UPDATE_STATES
from monitor.engine.model import Incident, IncidentError, IncidentEvent, IncidentState
from monitor.schedule_config import PersonSpec
from monitor.store.records import IncidentNotFound

LIST_STATES = ("open", "acknowledged", "resolved", "all")
LIST_LIMIT = 500
_DONE = ("acknowledged", "resolved", "noted", "case_recorded", "customer_updated")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/incidents", incidents_list)
    app.router.add_get("/incidents/{id}", incident_page)
    app.router.add_post("/incidents/{id}/ack", acknowledge)
    app.router.add_post("/incidents/{id}/resolve", resolve)
    app.router.add_post("/incidents/{id}/notes", add_note)
    app.router.add_post("/incidents/{id}/vendor-case", record_case)
    app.router.add_post("/incidents/{id}/customer-updates", customer_update)


def names(request: web.Request, incident: Incident) -> tuple[str, str]:
    """The customer's and the service's names as people know them."""
    catalog = request.app[SERVICES].catalog
    customer = catalog.customers.get(incident.customer) if catalog else None
    service = catalog.services.get(incident.service) if catalog else None
    if incident.customer == VENDOR_CUSTOMER:
        customer_name = ""  # the page says "several customers" in its language
    else:
        customer_name = customer.name if customer else incident.customer
    return customer_name, service.name if service else incident.service


def next_step(incident: Incident) -> dict[str, Any] | None:
    """The escalation step due next and when, while the incident is unacknowledged."""
    level, steps = incident.escalation_level, incident.policy.steps
    if incident.state is not IncidentState.OPEN or incident.next_escalation_at is None:
        return None
    if level >= len(steps):
        return None
    step = steps[level]
    return {
        "level": level + 1,
        "at": incident.next_escalation_at,
        "notify": list(step.notify),
        "action": step.action,
    }


def timeline_entry(event: IncidentEvent, people: Mapping[str, PersonSpec]) -> dict[str, Any]:
    """A timeline event for the page: the page words it in its language from ``detail``
    (``macros.html.j2``, ``event_line``); ``facts`` is the record, shown for a kind it
    has no words for; ``oncall`` names the people a step paged."""
    detail = dict(event.detail)
    text = detail.pop("text", None) or detail.pop("note", None)
    facts = [
        f"{key}={', '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in detail.items()
        if value not in (None, "", [])
    ]
    picked = detail.get("oncall")
    oncall = [
        {
            "schedule": str(schedule),
            "name": (people[person].name if person in people else person) if person else None,
        }
        for schedule, person in (picked if isinstance(picked, dict) else {}).items()
    ]
    return {
        "at": event.at,
        "kind": event.kind,
        "actor": event.actor,
        "text": text,
        "facts": ", ".join(facts),
        "detail": detail,
        "oncall": oncall,
    }


async def _show(
    request: web.Request,
    who: Visitor,
    incident_id: str,
    *,
    status: int = 200,
    problem: str | None = None,
    values: dict[str, str] | None = None,
) -> web.Response:
    operations = incident_operations(request)
    try:
        incident, events = await operations.get(incident_id)
    except IncidentNotFound:
        raise as_exception(
            render(request, "refused.html.j2", who, status=404, problem="no_such_incident")
        ) from None
    customer_name, service_name = names(request, incident)
    blast = [
        {"incident": member, "customer_name": names(request, member)[0]}
        for member in operations.blast_radius(incident)
    ]
    checks = (
        subscription_checks(request.app[SERVICES], incident.customer, incident.service)
        if incident.customer != VENDOR_CUSTOMER
        else []
    )
    done = request.query.get("done")
    catalog = request.app[SERVICES].catalog
    people = catalog.config.people if catalog else {}
    return render(
        request,
        "incident.html.j2",
        who,
        status=status,
        incident=incident,
        customer_name=customer_name,
        service_name=service_name,
        timeline=[timeline_entry(event, people) for event in reversed(events)],
        checks=checks,
        vendor=operations.vendor_state(incident.customer, incident.service),
        blast=blast,
        next_step=next_step(incident),
        draft=await operations.ticket_draft(incident.id),
        done=done if done in _DONE else None,
        problem=problem,
        values=values or {},
        note_max=NOTE_MAX_CHARS,
        update_states=CUSTOMER_UPDATE_STATES,
        status_link=_status_link(request, incident),
        case_max=VENDOR_CASE_MAX_CHARS,
    )


def _status_link(request: web.Request, incident: Incident) -> str | None:
    """The customer's status page (signed link), for a customer's own incident."""
    catalog = request.app[SERVICES].catalog
    customer = catalog.customers.get(incident.customer) if catalog else None
    return status_path(request, customer) if customer else None


async def incident_page(request: web.Request) -> web.Response:
    who = require_visitor(request)
    return await _show(request, who, request.match_info["id"])


async def _act(
    request: web.Request,
    done: str,
    change: Callable[[IncidentOperations, str, Visitor, dict[str, str]], Awaitable[Incident]],
    check: Callable[[dict[str, str]], str | None] = lambda form: None,
) -> web.Response:
    """Check the session, the form's CSRF token and the role, apply ``change``, and
    come back to the incident page (which says what was done, or why not)."""
    who = require_visitor(request)
    form = await form_of(request, who)
    require_operate(request, who)
    incident_id = request.match_info["id"]
    problem = check(form)
    if problem is not None:
        return await _show(request, who, incident_id, status=400, problem=problem, values=form)
    try:
        await change(incident_operations(request), incident_id, who, form)
    except IncidentNotFound:
        raise as_exception(
            render(request, "refused.html.j2", who, status=404, problem="no_such_incident")
        ) from None
    except IncidentError as exc:
        return await _show(request, who, incident_id, status=409, problem=str(exc), values=form)
    base = base_path(request.app[SERVICES].catalog.config.monitor.public_url)  # type: ignore[union-attr]
    raise web.HTTPSeeOther(f"{base}/incidents/{incident_id}?done={done}")


def _note(form: dict[str, str], field: str = "text") -> str:
    return clean_text(form.get(field, ""))


def _note_problem(form: dict[str, str], field: str = "text", required: bool = True) -> str | None:
    text = _note(form, field)
    if required and not text:
        return "note_required"
    if len(text) > NOTE_MAX_CHARS:
        return "note_too_long"
    return None


def _case(form: dict[str, str]) -> str:
    return clean_text(form.get("case", ""), multiline=False)


def _case_problem(form: dict[str, str]) -> str | None:
    case = _case(form)
    if not case:
        return "case_required"
    if len(case) > VENDOR_CASE_MAX_CHARS:
        return "case_too_long"
    return None


async def acknowledge(request: web.Request) -> web.Response:
    return await _act(
        request,
        "acknowledged",
        lambda ops, incident_id, who, form: ops.acknowledge(incident_id, who.session.actor),
    )


async def resolve(request: web.Request) -> web.Response:
    return await _act(
        request,
        "resolved",
        lambda ops, incident_id, who, form: ops.resolve(
            incident_id, who.session.actor, note=_note(form, "note")
        ),
        lambda form: _note_problem(form, "note", required=False),
    )


async def add_note(request: web.Request) -> web.Response:
    return await _act(
        request,
        "noted",
        lambda ops, incident_id, who, form: ops.add_note(
            incident_id, who.session.actor, _note(form)
        ),
        _note_problem,
    )


async def record_case(request: web.Request) -> web.Response:
    return await _act(
        request,
        "case_recorded",
        lambda ops, incident_id, who, form: ops.set_vendor_case(
            incident_id, who.session.actor, _case(form)
        ),
        _case_problem,
    )


def _update_problem(form: dict[str, str]) -> str | None:
    if form.get("state") not in CUSTOMER_UPDATE_STATES:
        return "update_required"
    return _note_problem(form, "text")


async def customer_update(request: web.Request) -> web.Response:
    return await _act(
        request,
        "customer_updated",
        lambda ops, incident_id, who, form: ops.add_customer_update(
            incident_id, who.session.actor, form["state"], _note(form)
        ),
        _update_problem,
    )


async def incidents_list(request: web.Request) -> web.Response:
    who = require_visitor(request)
    state = request.query.get("state", "open")
    if state not in LIST_STATES:
        state = "open"
    search = request.query.get("q", "").strip()[:200]
    operations = incident_operations(request)
    if state == "open":
        found = await operations.list_incidents(state="open", limit=LIST_LIMIT)
    else:
        found = await operations.list_incidents(state=state, limit=LIST_LIMIT)
    rows = []
    for incident in found:
        customer_name, service_name = names(request, incident)
        haystack = " ".join(
            (incident.id, incident.customer, incident.service, customer_name, service_name)
        ).lower()
        if search and search.lower() not in haystack:
            continue
        rows.append(
            {"incident": incident, "customer_name": customer_name, "service_name": service_name}
        )
    return render(
        request, "incidents.html.j2", who, rows=rows, state=state, states=LIST_STATES, q=search
    )
