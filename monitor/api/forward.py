"""In a cluster, incident and maintenance requests made to a node that does not lead go
to the node that does.

Only the leader runs the incident manager (monitor/duties.py): it holds the
open incidents, their escalation and the notifier, so an acknowledgement
must reach it to stop the next page. Any node answers: a node that does
not lead passes the request on unchanged (the token with it: the leader
checks it, as it would its own) and relays the answer. A request already
passed on is never passed again, and while no node leads (a takeover takes
up to the lease) the answer is 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from monitor.api.services import SERVICES

log = logging.getLogger(__name__)

FORWARDED_BY = "X-CSP-Monitor-Forwarded-By"
# Paths served by the leader's incident manager (GET included: its memory is the truth
# about escalation, and a follower has none)
# Console pages that read or change incidents and maintenance go too: the board, the
# incident pages and their actions, maintenance, the customers' status pages. The session
# cookie and the CSRF token are signed with a key every node shares (console/keys.py),
# so the leader reads a session a follower issued.
LEADER_PATHS = (
    "/api/v1/incidents",
    "/api/v1/maintenance",
    "/ack/",
    "/board",
    "/incidents",
    "/maintenance",
    "/status/",
)
_PASSED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Accept-Language",
    "User-Agent",
    "Cookie",  # the console's session and language
    "X-Requested-With",  # the board's refresh: 401 rather than a sign-in page
)
_RELAYED_HEADERS = (
    "Content-Type",
    "Retry-After",
    "WWW-Authenticate",
    "Location",
    "Cache-Control",
    "Set-Cookie",  # the language switch (a page may set more than one)
    # a console page's own protections, as the leader set them
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
)
_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("forwarding_session")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_forwarding(app: web.Application) -> None:
    app.middlewares.append(forward_to_leader)
    app.cleanup_ctx.append(_session)


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        app[_SESSION] = session
        yield


def leader_url(listen: str) -> str:
    """The base URL of a member from its stored address (host:port, or a URL)."""
    return listen.rstrip("/") if "://" in listen else f"http://{listen}"


def _unavailable(message: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=json.dumps({"status": "error", "message": message}),
        content_type="application/json",
        headers={"Retry-After": "2"},
    )


@web.middleware
async def forward_to_leader(request: web.Request, handler: Handler) -> web.StreamResponse:
    services = request.app[SERVICES]
    node = services.cluster
    if node is None or services.incidents is not None or not request.path.startswith(LEADER_PATHS):
        return await handler(request)
    if request.headers.get(FORWARDED_BY):
        raise _unavailable("this node was asked as the leader but does not lead now; retry")
    leader = node.leader_address()
    if leader is None:
        raise _unavailable("no node leads right now (a takeover is under way); retry shortly")
    body = await request.read()
    headers = {name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers}
    headers[FORWARDED_BY] = node.node_id
    url = leader_url(leader) + request.path_qs
    try:
        async with request.app[_SESSION].request(
            request.method, url, data=body or None, headers=headers, allow_redirects=False
        ) as answer:
            payload = await answer.read()
            relayed = CIMultiDict(
                (k, v) for k in _RELAYED_HEADERS for v in answer.headers.getall(k, [])
            )
            return web.Response(status=answer.status, body=payload, headers=relayed)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning(
            "event=forward_failed path=%s leader=%s error=%s",
            request.path,
            leader,
            type(exc).__name__,
        )
        raise _unavailable("the leader could not be reached; retry shortly") from None
