"""HTTP API for probe agents: their assignment, and the results they push (role ``agent``).

An agent (``csp-monitor agent``) probes for a location that has no node of its
own. It pulls the targets of its location (monitor/agent/assignment.py) and
pushes what it saw in batches, late when it was cut off, each result with its
own time. Any node answers both: a pushed report is filed as that location's
(and, in a cluster, passed to the node that decides the target through the
store), so an agent need not know who leads.

A token may be limited to some locations (``api_tokens[].locations``): it sees
only their checks' options, which may hold secrets, and reports only for them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from monitor.agent.assignment import assignment_for
from monitor.api.auth import require_role
from monitor.api.errors import bad_request, refusal
from monitor.api.input import Body, CaseNumber, json_object, validated
from monitor.api.services import SERVICES
from monitor.config import ConfigIssue
from monitor.engine.quorum import LocationReport
from monitor.probe import ProbeResult, Status

MAX_RESULTS = 5000  # per push; an agent sends at most 1,000 at a time
MAX_AHEAD_SECONDS = 300.0  # an agent's clock may run this far ahead of ours, no further

LocationName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=100)]


MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class ProbeFigures(Body):
    """The probe's own figures, exported as this location's ``probe_*`` series."""

    success: bool
    duration: float = Field(ge=0)
    phases: dict[MetricName, float] = Field(default_factory=dict, max_length=20)
    facts: dict[MetricName, float] = Field(default_factory=dict, max_length=50)

    def as_result(self) -> ProbeResult:
        return ProbeResult(
            self.success, self.duration, phases=dict(self.phases), facts=dict(self.facts)
        )


class PushedResult(Body):
    """What the agent's location saw of one target at one probe (its thresholds applied)."""

    target: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    at: float = Field(gt=0)  # when it probed (the agent's clock, Unix seconds)
    status: Literal["up", "down", "degraded", "unknown"]
    since: float = Field(ge=0)  # since when the location has seen this status
    reason: CaseNumber = ""  # one line, at most 256 characters
    probe: ProbeFigures | None = None


class Push(Body):
    location: LocationName
    agent: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    results: list[PushedResult] = Field(max_length=MAX_RESULTS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/agent/assignment", assignment)
    app.router.add_post("/api/v1/agent/results", push_results)


def _allowed_location(request: web.Request, location: str) -> None:
    """403 unless the caller's token may act for ``location``."""
    name = require_role(request, "agent")
    catalog = request.app[SERVICES].catalog
    tokens = catalog.config.monitor.api_tokens if catalog is not None else []
    token = next((token for token in tokens if token.name == name), None)
    if token is not None and token.locations is not None and location not in token.locations:
        raise web.HTTPForbidden(text=f"token {name!r} may not act for location {location!r}\n")


async def assignment(request: web.Request) -> web.Response:
    location = request.query.get("location", "")
    if not location:
        raise bad_request("location", "is required: the location the agent probes for")
    _allowed_location(request, location)
    catalog = request.app[SERVICES].catalog
    if catalog is None:
        raise web.HTTPServiceUnavailable(text="starting\n", headers={"Retry-After": "2"})
    document = assignment_for(catalog, location)
    etag = f'"{document["version"]}"'
    if request.headers.get("If-None-Match") == etag:
        raise web.HTTPNotModified(headers={"ETag": etag})
    # the options may hold secrets: nothing on the way may keep them
    return web.json_response(document, headers={"ETag": etag, "Cache-Control": "no-store"})


async def push_results(request: web.Request) -> web.Response:
    require_role(request, "agent")  # before the body is read
    push = validated(Push, await json_object(request))
    _allowed_location(request, push.location)
    services = request.app[SERVICES]
    now = services.wall()
    issues = [
        issue
        for index, result in enumerate(push.results)
        for issue in _time_issues(index, result, now)
    ]
    if issues:
        raise refusal(web.HTTPBadRequest, issues)
    ignored = services.accept_location_reports(
        push.location,
        [
            (
                result.target,
                LocationReport(
                    push.location,
                    Status(result.status),
                    result.reason,
                    result.at,
                    result.since,
                    push.agent,
                ),
                result.probe.as_result() if result.probe is not None else None,
            )
            for result in push.results
        ],
    )
    return web.json_response(
        {"accepted": len(push.results) - len(ignored), "ignored": sorted(set(ignored))}
    )


def _time_issues(index: int, result: PushedResult, now: float) -> list[ConfigIssue]:
    where = f"results.{index}"
    if result.at > now + MAX_AHEAD_SECONDS:
        return [
            ConfigIssue(
                f"{where}.at",
                f"{result.at - now:.0f} s ahead of the server's clock (at most "
                f"{MAX_AHEAD_SECONDS:.0f}): check the agent's clock (NTP)",
            )
        ]
    if result.since > result.at:
        return [ConfigIssue(f"{where}.since", "is after at: a status cannot begin after its probe")]
    return []
