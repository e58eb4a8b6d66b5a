"""The signed acknowledge link from a message: works without signing in, for its own
incident only, until it expires.

Opening it (GET) only shows a confirmation form, because mail scanners open
links; the POST acknowledges. The link's token is the form's protection (it is
a secret only the message's reader has), so no session or CSRF token is needed.
Once acknowledged, the page offers the incident page (which asks to sign in).
"""

from __future__ import annotations

from aiohttp import web

from monitor.api.incidents import incident_operations
from monitor.api.input import clean_text
from monitor.console.access import render, visitor
from monitor.console.incidents import names
from monitor.engine.model import IncidentError
from monitor.store.records import IncidentNotFound

ACK_NAME_MAX_CHARS = 80


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ack/{id}", ack_page)
    app.router.add_post("/ack/{id}", ack_by_link)


async def ack_page(request: web.Request) -> web.Response:
    manager = incident_operations(request)
    incident_id, token = request.match_info["id"], request.query.get("t", "")
    who = visitor(request)
    problem = manager.check_link(incident_id, token)
    if problem:
        return render(request, "ack.html.j2", who, status=403, mode="invalid", problem=problem)
    try:
        incident, _ = await manager.get(incident_id)
    except IncidentNotFound:
        return render(request, "ack.html.j2", who, status=404, mode="not_found")
    customer_name, service_name = names(request, incident)
    return render(
        request,
        "ack.html.j2",
        who,
        mode="confirm",
        incident=incident,
        customer_name=customer_name,
        service_name=service_name,
        token=token,
    )


async def ack_by_link(request: web.Request) -> web.Response:
    manager = incident_operations(request)
    incident_id = request.match_info["id"]
    who = visitor(request)
    try:
        form = await request.post()
    except ValueError:  # UnicodeDecodeError among them: a form that is not UTF-8
        return render(request, "ack.html.j2", who, status=400, mode="unreadable")
    posted = form.get("t")
    token = posted if isinstance(posted, str) and posted else request.query.get("t", "")
    by = form.get("by")
    name = clean_text(by if isinstance(by, str) else "", multiline=False)[:ACK_NAME_MAX_CHARS]
    problem = manager.check_link(incident_id, token)
    if problem:
        return render(request, "ack.html.j2", who, status=403, mode="invalid", problem=problem)
    try:
        incident = await manager.acknowledge(incident_id, actor=f"{name or 'link'} (link)")
    except IncidentNotFound:
        return render(request, "ack.html.j2", who, status=404, mode="not_found")
    except IncidentError as exc:
        return render(
            request,
            "ack.html.j2",
            who,
            status=409,
            mode="conflict",
            problem=str(exc),
            incident_id=incident_id,
        )
    return render(request, "ack.html.j2", who, mode="done", incident=incident, name=name or "link")
