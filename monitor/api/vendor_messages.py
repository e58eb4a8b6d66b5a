"""HTTP API for Microsoft 365 Message Center posts and the maintenance windows they propose.

``GET /api/v1/vendor-messages`` lists every post once, with the customers it reached
(``?customer=`` narrows to one customer's, earliest action-required date first), and
the proposed windows with whether an operator confirmed each.
``POST /api/v1/vendor-messages/{id}/confirm`` (role ``operate``) turns a proposal into
maintenance windows, one per customer × service (``{"customers": [...]}`` narrows it):
nothing the vendor says becomes an SLA exclusion until a person says so.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from monitor.api.auth import require_read, require_role
from monitor.api.errors import bad_request, invalid_body, refusal
from monitor.api.incidents import incident_operations, iso_time
from monitor.api.input import json_object
from monitor.api.maintenance import window_json
from monitor.api.services import SERVICES
from monitor.config import ConfigIssue
from monitor.engine.model import MaintenanceWindow
from monitor.message_center import MessageBoard, ProposedWindow, VendorMessage, window_reason


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/vendor-messages", list_messages)
    app.router.add_post("/api/v1/vendor-messages/{id}/confirm", confirm_window)


def _message_json(board: MessageBoard, message: VendorMessage) -> dict[str, Any]:
    document = message.to_json()
    for name in ("last_modified", "start", "end", "action_required_by"):
        document[name] = iso_time(document[name])
    document["customers"] = board.customers_of(message.id)
    return document


def _confirmed(
    proposal: ProposedWindow, windows: list[MaintenanceWindow]
) -> set[tuple[str | None, str | None]]:
    """The proposal's subscriptions that have their window: it names the post, and its
    times are the post's latest (a post moved to new dates is proposed again)."""
    reason = window_reason(proposal)
    return {
        (w.customer, w.service)
        for w in windows
        if (w.reason, w.starts_at, w.ends_at) == (reason, proposal.starts_at, proposal.ends_at)
    }


def _proposal_json(
    proposal: ProposedWindow, confirmed: set[tuple[str | None, str | None]]
) -> dict[str, Any]:
    return {
        "message_id": proposal.message_id,
        "title": proposal.title,
        "starts_at": iso_time(proposal.starts_at),
        "ends_at": iso_time(proposal.ends_at),
        "subscriptions": [
            {"customer": c, "service": s, "confirmed": (c, s) in confirmed}
            for c, s in proposal.subscriptions
        ],
        "confirmed": set(proposal.subscriptions) <= confirmed,
    }


async def list_messages(request: web.Request) -> web.Response:
    require_read(request)
    board = request.app[SERVICES].messages
    customer = request.query.get("customer")
    if customer is None:
        messages = sorted((p.message for p in board.posts.values()), key=lambda m: m.id)
    else:
        messages = board.for_customer(customer)
    proposals = [
        p
        for p in board.proposals()
        if customer is None or any(c == customer for c, _ in p.subscriptions)
    ]
    windows = await incident_operations(request).list_maintenance() if proposals else []
    return web.json_response(
        {
            "messages": [_message_json(board, message) for message in messages],
            "proposed_windows": [_proposal_json(p, _confirmed(p, windows)) for p in proposals],
        }
    )


async def confirm_window(request: web.Request) -> web.Response:
    actor = require_role(request, "operate")
    body = await json_object(request)
    board = request.app[SERVICES].messages
    message_id = request.match_info["id"]
    proposal = board.proposal(message_id)
    if proposal is None:
        issue = ConfigIssue("id", "no Message Center post with a window to propose by that id")
        raise refusal(web.HTTPNotFound, [issue])
    wanted = body.get("customers")
    listed = {customer for customer, _ in proposal.subscriptions}
    issues = []
    if wanted is not None and not (
        isinstance(wanted, list) and wanted and all(isinstance(c, str) for c in wanted)
    ):
        issues.append(ConfigIssue("customers", "a non-empty list of customer ids"))
    elif wanted is not None:
        issues += [
            ConfigIssue(f"customers[{i}]", f"{c!r} did not receive {message_id}")
            for i, c in enumerate(wanted)
            if c not in listed
        ]
    issues += [ConfigIssue(name, "unknown field") for name in set(body) - {"customers"}]
    if issues:
        raise invalid_body(issues)
    manager = incident_operations(request)
    confirmed = _confirmed(proposal, await manager.list_maintenance())
    chosen = [
        (customer, service)
        for customer, service in proposal.subscriptions
        if customer in set(wanted or listed) and (customer, service) not in confirmed
    ]
    if not chosen:
        raise refusal(web.HTTPConflict, [ConfigIssue("id", f"{message_id} is confirmed already")])
    created = []
    for customer, service in chosen:
        window = MaintenanceWindow(
            id=f"MW-{uuid.uuid4().hex[:10]}",
            starts_at=proposal.starts_at,
            ends_at=proposal.ends_at,
            customer=customer,
            service=service,
            reason=window_reason(proposal),
            created_by=actor,
        )
        try:
            created.append(await manager.add_maintenance(window))
        except ValueError as exc:  # e.g. a window already over
            raise bad_request("id", str(exc)) from None
    return web.json_response(
        {"message_id": message_id, "maintenance": [window_json(w) for w in created]},
        status=201,
    )
