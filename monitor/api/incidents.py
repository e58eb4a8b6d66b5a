"""HTTP API for incidents.

Reads need role ``read`` when ``monitor.protect_reads`` is set; changes need
``operate``. The acknowledge links from messages are console pages
(monitor/console/ack.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from monitor.api.auth import require_read, require_role
from monitor.api.errors import bad_request, refusal
from monitor.api.input import (
    Body,
    CaseNumber,
    Note,
    bounded_int,
    json_object,
    validated,
)
from monitor.api.services import SERVICES, IncidentOperations
from monitor.config import ConfigIssue
from monitor.engine.model import Incident, IncidentError, IncidentEvent
from monitor.store.records import IncidentNotFound

LIST_LIMIT = 1000  # incidents in one answer
INCIDENT_STATES = ("open", "acknowledged", "resolved", "all")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", show_incident)
    app.router.add_post("/api/v1/incidents/{id}/ack", acknowledge)
    app.router.add_post("/api/v1/incidents/{id}/resolve", resolve)
    app.router.add_post("/api/v1/incidents/{id}/notes", add_note)
    app.router.add_put("/api/v1/incidents/{id}/vendor-case", set_vendor_case)
    app.router.add_post("/api/v1/incidents/{id}/customer-updates", add_customer_update)


def incident_operations(request: web.Request) -> IncidentOperations:
    """The incident operations, or 503 while the store is not open yet."""
    manager = request.app[SERVICES].incidents
    if manager is None:
        raise web.HTTPServiceUnavailable(text="incidents are not running yet\n")
    return manager


def _reader(request: web.Request) -> None:
    require_read(request)


def _actor(request: web.Request) -> str:
    return require_role(request, "operate")


def iso_time(value: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def incident_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "customer": incident.customer,
        "service": incident.service,
        "status": incident.status,
        "severity": incident.severity.value,
        "state": incident.state.value,
        "reason": incident.reason,
        # the locations that saw it down (empty without locations): a path problem when
        # they are fewer than the quorum
        "down_from": list(incident.down_from),
        "opened_at": iso_time(incident.opened_at),
        "acknowledged_at": iso_time(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": iso_time(incident.resolved_at),
        "escalation_level": incident.escalation_level,
        "next_escalation_at": iso_time(incident.next_escalation_at),
        "policy": incident.policy.name,
        "flapping": incident.flapping,
        "muted": incident.muted,
        "vendor_case": incident.vendor_case,
        "vendor_incident": incident.vendor_group,
        # who steps paged through schedules (person None: nobody was on call)
        "oncall": [pick.to_json() for pick in incident.oncall],
    }


def event_json(event: IncidentEvent) -> dict[str, Any]:
    return {
        "at": iso_time(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "detail": event.detail,
    }


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object(request)


class ResolveBody(Body):
    note: Note = ""


class NoteBody(Body):
    text: Note


class VendorCaseBody(Body):
    case: CaseNumber


class CustomerUpdateBody(Body):
    """A public update for the customer's status page."""

    state: Literal["investigating", "identified", "monitoring", "resolved"]
    text: Note


async def list_incidents(request: web.Request) -> web.Response:
    _reader(request)
    query = request.query
    limit = bounded_int(query, "limit", default=100, low=1, high=LIST_LIMIT)
    state = query.get("state", "open")
    if state not in INCIDENT_STATES:
        raise bad_request("state", f"one of {', '.join(INCIDENT_STATES)}")
    incidents = await incident_operations(request).list_incidents(
        state=state,
        customer=query.get("customer"),
        service=query.get("service"),
        limit=limit,
    )
    return web.json_response({"incidents": [incident_json(i) for i in incidents]})


async def show_incident(request: web.Request) -> web.Response:
    _reader(request)
    with incident_refusals():
        incident, events = await incident_operations(request).get(request.match_info["id"])
    document = incident_json(incident)
    document["timeline"] = [event_json(event) for event in events]
    return web.json_response(document)


@contextmanager
def incident_refusals() -> Iterator[None]:
    """Map the manager's refusals to answers: no such incident 404, any other
    ``IncidentError`` (already resolved, still down …) 409."""
    try:
        yield
    except IncidentNotFound as exc:
        raise refusal(web.HTTPNotFound, [ConfigIssue("id", str(exc))]) from None
    except IncidentError as exc:
        raise refusal(web.HTTPConflict, [ConfigIssue("id", str(exc))]) from None


async def _change(
    request: web.Request, change: Callable[[IncidentOperations, str], Awaitable[Incident]]
) -> web.Response:
    """Apply ``change(operations, incident_id)`` and answer with the changed incident."""
    with incident_refusals():
        incident = await change(incident_operations(request), request.match_info["id"])
    return web.json_response(incident_json(incident))


async def acknowledge(request: web.Request) -> web.Response:
    actor = _actor(request)
    return await _change(request, lambda ops, incident_id: ops.acknowledge(incident_id, actor))


async def resolve(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = validated(ResolveBody, await _body(request))
    return await _change(
        request, lambda ops, incident_id: ops.resolve(incident_id, actor, note=body.note)
    )


async def add_note(request: web.Request) -> web.Response:
    actor = _actor(request)
    text = validated(NoteBody, await _body(request)).text
    if not text:
        raise bad_request("text", 'give the note as {"text": "..."}')
    return await _change(request, lambda ops, incident_id: ops.add_note(incident_id, actor, text))


async def set_vendor_case(request: web.Request) -> web.Response:
    actor = _actor(request)
    case = validated(VendorCaseBody, await _body(request)).case
    if not case:
        raise bad_request("case", 'give the 21Vianet case number as {"case": "..."}')
    return await _change(
        request, lambda ops, incident_id: ops.set_vendor_case(incident_id, actor, case)
    )


async def add_customer_update(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = validated(CustomerUpdateBody, await _body(request))
    if not body.text:
        raise bad_request("text", 'give the update as {"state": "...", "text": "..."}')
    return await _change(
        request,
        lambda ops, incident_id: ops.add_customer_update(incident_id, actor, body.state, body.text),
    )
