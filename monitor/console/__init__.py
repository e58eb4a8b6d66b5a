"""The web console: pages for on-call engineers and the NOC, served by the daemon.

Server-rendered from Jinja2 templates (``templates/``, sandboxed, always
autoescaped), phone first, English and Chinese. Signing in exchanges an API token
for a session cookie (``access.py``); the roles are the API's. The only script is
``static/console.js`` (copy buttons, the board's refresh), loaded from this server:
the Content-Security-Policy forbids inline script and style.

Pages: ``/board``, ``/incidents``, ``/incidents/{id}`` (the link in every
message), ``/maintenance``, ``/reports``, ``/config``, ``/signin``, ``/signout``, the signed
acknowledge link ``/ack/{id}`` and each customer's status page ``/status/{customer}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from monitor.console import ack, board, config_page, incidents, planning, status_page
from monitor.console.access import CONSOLE, ConsoleState, sign_in, sign_in_page, sign_out
from monitor.console.pages import SECURITY_HEADERS, STATIC

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CSP and friends on every answer of the server (a JSON answer is no worse for them)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in SECURITY_HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def add_routes(app: web.Application) -> None:
    """Serve the console from ``app`` (the daemon's HTTP server)."""
    app[CONSOLE] = ConsoleState()
    app.middlewares.append(security_headers)
    app.router.add_get("/signin", sign_in_page)
    app.router.add_post("/signin", sign_in)
    app.router.add_post("/signout", sign_out)
    app.router.add_static("/static", STATIC, append_version=False)
    board.add_routes(app)
    incidents.add_routes(app)
    ack.add_routes(app)
    planning.add_routes(app)
    status_page.add_routes(app)
    config_page.add_routes(app)
