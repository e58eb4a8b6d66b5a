"""HTTP API for on-call: who is on call now and next, a calendar feed per schedule,
and overrides (list; add and delete with role ``operate``).

``GET /api/v1/oncall[?at=TIME]``, ``GET /api/v1/oncall/NAME.ics``,
``GET|POST /api/v1/oncall/overrides``, ``DELETE /api/v1/oncall/overrides/ID``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from icalendar import Calendar, Event

from monitor.api.auth import require_read, require_role
from monitor.api.errors import bad_request, invalid_body, refusal
from monitor.api.incidents import incident_operations, iso_time
from monitor.api.input import json_object
from monitor.api.services import SERVICES
from monitor.config import ConfigIssue
from monitor.engine.oncall import DAY, Override, Shift
from monitor.maintenance_request import EARLIEST, LATEST, InvalidRequest
from monitor.oncall_book import OnCallBook, OverrideRefused
from monitor.oncall_request import parse_moment, parse_override, to_seconds

FEED_PAST = 14 * DAY  # a calendar shows the last two weeks …
FEED_AHEAD = 56 * DAY  # … and the next eight


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/oncall", who_is_on_call)
    app.router.add_get("/api/v1/oncall/overrides", list_overrides)
    app.router.add_post("/api/v1/oncall/overrides", create_override)
    app.router.add_delete("/api/v1/oncall/overrides/{id}", delete_override)
    app.router.add_get("/api/v1/oncall/{name}.ics", calendar_feed)


def _book(request: web.Request) -> OnCallBook:
    return incident_operations(request).oncall


def _person(book: OnCallBook, person_id: str | None) -> dict[str, Any] | None:
    """A person as the API shows them: id, name, language (addresses stay in the config)."""
    if person_id is None:
        return None
    spec = book.people.get(person_id)
    return {
        "id": person_id,
        "name": spec.name if spec else person_id,
        "language": spec.language if spec else None,
    }


def _shift_json(book: OnCallBook, shift: Shift) -> dict[str, Any]:
    return {
        "person": _person(book, shift.person),
        "source": shift.source,
        "starts_at": iso_time(shift.start),
        "ends_at": iso_time(shift.end),
    }


async def who_is_on_call(request: web.Request) -> web.Response:
    require_read(request)
    book = _book(request)
    at = _asked_time(request)
    if at is None:
        at = _wall(request)
    schedules = []
    gaps = book.gaps(at)
    for answer in book.now_and_next(at):
        current = answer.current
        schedules.append(
            {
                "schedule": answer.schedule,
                "time_zone": book.zones.get(answer.schedule),
                "on_call": None
                if current is None
                else {
                    **(_person(book, current.person) or {}),
                    "source": current.source,
                    "until": iso_time(answer.current_until) if answer.current_until else None,
                },
                "next": _shift_json(book, answer.next) if answer.next is not None else None,
                "gaps_next_7_days": [
                    {"starts_at": iso_time(g.start), "ends_at": iso_time(g.end)}
                    for g in gaps.get(answer.schedule, [])
                ],
            }
        )
    return web.json_response({"at": iso_time(at), "schedules": schedules})


def _wall(request: web.Request) -> float:
    return request.app[SERVICES].wall()


def _asked_time(request: web.Request) -> float | None:
    """``?at=`` as Unix seconds: ISO 8601 with an offset, or a time in Beijing time."""
    value = request.query.get("at")
    if value is None:
        return None
    try:
        at = to_seconds(parse_moment(value), "Asia/Shanghai")
    except ValueError as exc:
        raise bad_request("at", str(exc)) from None
    if not EARLIEST <= at < LATEST:
        raise bad_request("at", "must be a time between 1970 and 9000")
    return at


def override_json(book: OnCallBook, override: Override) -> dict[str, Any]:
    return {
        "id": override.id,
        "schedule": override.schedule,
        "person": _person(book, override.person),
        "covers": _person(book, override.covers),
        "starts_at": iso_time(override.starts_at),
        "ends_at": iso_time(override.ends_at),
        "reason": override.reason,
        "created_by": override.created_by,
    }


async def list_overrides(request: web.Request) -> web.Response:
    require_read(request)
    book = _book(request)
    return web.json_response({"overrides": [override_json(book, o) for o in book.overrides]})


async def create_override(request: web.Request) -> web.Response:
    actor = require_role(request, "operate")
    body = await json_object(request)
    book = _book(request)
    try:
        asked = parse_override(body)
        zone = book.zones.get(asked.schedule, "Asia/Shanghai")
        override = asked.override(f"OV-{uuid.uuid4().hex[:10]}", zone, actor, _wall(request))
        book.check_override(override)
    except InvalidRequest as exc:
        raise invalid_body(exc.issues) from None
    except OverrideRefused as exc:
        raise invalid_body([ConfigIssue(exc.field, str(exc))]) from None
    stored = await book.add(override)
    return web.json_response(override_json(book, stored), status=201)


async def delete_override(request: web.Request) -> web.Response:
    actor = require_role(request, "operate")
    override_id = request.match_info["id"]
    if not await _book(request).delete(override_id, actor):
        raise refusal(web.HTTPNotFound, [ConfigIssue("id", "no such override")])
    return web.json_response({"deleted": override_id})


async def calendar_feed(request: web.Request) -> web.Response:
    """The schedule's shifts as an iCalendar feed (RFC 5545) for people's calendars: one
    event per shift, two weeks back and eight ahead (the first and last cut at those
    ends), times in UTC. Calendars subscribed to it replace it whole at each refresh."""
    require_read(request)
    book = _book(request)
    name = request.match_info["name"]
    if name not in book.schedules:
        raise refusal(web.HTTPNotFound, [ConfigIssue("name", f"no schedule {name!r}")])
    now = _wall(request)
    calendar = Calendar()
    calendar.add("prodid", "-//csp-monitor//on-call//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"On call: {name}")
    stamp = datetime.fromtimestamp(now, UTC)
    # whole UTC days: the feed's first and last events change once a day, not per request
    today = now - now % DAY
    for shift in book.shifts(name, today - FEED_PAST, today + FEED_AHEAD):
        if shift.person is None:
            continue
        person = _person(book, shift.person) or {}
        event = Event()
        # stable per shift: a calendar updates the event instead of duplicating it
        event.add("uid", f"{name}-{int(shift.start)}-{shift.person}@csp-monitor")
        event.add("dtstamp", stamp)
        event.add("dtstart", datetime.fromtimestamp(shift.start, UTC))
        event.add("dtend", datetime.fromtimestamp(shift.end, UTC))
        event.add("summary", f"On call ({name}): {person.get('name', shift.person)}")
        event.add("description", f"{shift.person} via {shift.source}")
        calendar.add_component(event)
    return web.Response(
        body=calendar.to_ical(),
        content_type="text/calendar",
        charset="utf-8",
        headers={"Content-Disposition": f'inline; filename="{name}.ics"'},
    )
