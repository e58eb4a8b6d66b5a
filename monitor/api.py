"""HTTP endpoints: metrics, health, status and the reload hook.

Reads of the API are open unless ``monitor.protect_reads`` is set; anything
that changes state needs a bearer token with the right role
(``monitor.api_tokens`` in the config). ``/metrics``, ``/healthz`` and
``/readyz`` stay open: Prometheus and orchestrators call them without tokens.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter, generate_latest

from monitor.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from monitor.daemon import Daemon

log = logging.getLogger(__name__)

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
AUTH_REFUSED: web.AppKey[Counter] = web.AppKey("auth_refused")
# Why a request's credentials were refused: the label values of AUTH_REFUSED.
REFUSAL_REASONS = ("missing", "malformed", "unknown_token", "lacks_role")


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application()
    app[DAEMON] = daemon
    app[AUTH_REFUSED] = Counter(
        "csp_monitor_api_auth_refused",
        "API requests refused for their credentials, by reason "
        "(missing, malformed, unknown_token, lacks_role)",
        ["reason"],
        registry=daemon.registry,
    )
    for reason in REFUSAL_REASONS:
        app[AUTH_REFUSED].labels(reason)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/-/reload", reload)
    add_incident_routes(app)
    return app


def add_incident_routes(app: web.Application) -> None:
    from monitor import api_incidents, api_reports  # they import this module
    from monitor.cluster import api as api_cluster

    api_incidents.add_routes(app)
    api_reports.add_routes(app)
    api_cluster.add_routes(app)


def require_role(request: web.Request, role: str) -> str:
    """The token's name, or 401/403 unless the request carries a token with ``role``.

    ``admin`` holds every role and ``operate`` includes ``read``.
    """
    daemon = request.app[DAEMON]
    tokens = daemon.catalog.config.monitor.api_tokens if daemon.catalog else []
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        _refused(request, "missing", role)
        raise web.HTTPUnauthorized(
            text=f"this endpoint needs a bearer token with role {role}\n",
            headers={"WWW-Authenticate": 'Bearer realm="csp-monitor"'},
        )
    # Tokens are printable ASCII; anything else (raw bytes aiohttp decoded as surrogates,
    # control characters) cannot match one and must not reach the comparison's encoder.
    if not (presented.isascii() and presented.isprintable()):
        _refused(request, "malformed", role)
        raise web.HTTPUnauthorized(
            text="malformed token: a bearer token is printable ASCII\n",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    for token in tokens:
        secret = token.token.get_secret_value()
        if secret and hmac.compare_digest(secret.encode(), presented.encode()):
            held = set(token.roles)
            if "admin" in held or role in held or (role == "read" and "operate" in held):
                return token.name
            _refused(request, "lacks_role", role, token.name)
            raise web.HTTPForbidden(text=f"token {token.name!r} lacks role {role}\n")
    _refused(request, "unknown_token", role)
    raise web.HTTPUnauthorized(
        text="unknown token\n", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def require_read(request: web.Request) -> None:
    """401/403 unless reads are open or the request carries a token with role ``read``."""
    catalog = request.app[DAEMON].catalog
    if catalog is not None and catalog.config.monitor.protect_reads:
        require_role(request, "read")


def _refused(request: web.Request, reason: str, role: str, token_name: str | None = None) -> None:
    """Count and log a refusal; the presented token itself is never logged."""
    request.app[AUTH_REFUSED].labels(reason).inc()
    log.warning(
        "event=api_auth_refused reason=%s method=%s path=%s remote=%s role=%s token=%s",
        reason,
        request.method,
        request.path,
        request.remote,
        role,
        token_name or "-",
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
    await response.prepare(request)
    await response.write(generate_latest(daemon.registry))
    async for chunk in daemon.target_metrics.render():
        if chunk:
            await response.write(chunk)
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[DAEMON].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready\n")


async def reload(request: web.Request) -> web.Response:
    require_role(request, "admin")
    ok, message = await request.app[DAEMON].reload()
    return web.json_response(
        {"status": "success" if ok else "error", "message": message}, status=200 if ok else 400
    )


async def status(request: web.Request) -> web.Response:
    require_read(request)
    from monitor.cluster.api import add_other_nodes_subscriptions  # it imports this module

    daemon = request.app[DAEMON]
    document = status_document(daemon, request.query)
    await add_other_nodes_subscriptions(daemon, document, request.query)
    return web.json_response(document)


def status_document(daemon: Daemon, query: Any) -> dict[str, Any]:
    """Every customer × service with status, since when, and each check's last result."""
    catalog = daemon.catalog
    rows: list[dict[str, Any]] = []
    if catalog is None:
        return {"generated_at": daemon.wall(), "subscriptions": rows}
    customers, services = catalog.customers, catalog.services
    wanted = {key: query.get(key) for key in ("customer", "service", "status")}
    for key, subscription in catalog.subscriptions.items():
        state = daemon.board.subscriptions.get(key)
        if state is None:
            continue
        if (
            wanted["customer"] not in (None, key[0])
            or wanted["service"] not in (None, key[1])
            or wanted["status"] not in (None, state.status.value)
        ):
            continue
        checks = []
        for target_id in subscription.target_ids:
            target_state = daemon.board.targets.get(target_id)
            spec = catalog.targets[target_id]
            if target_state is None:
                continue
            last = target_state.last_result
            checks.append(
                {
                    "check": spec.target.check,
                    "type": spec.target.type,
                    "status": target_state.status.value,
                    "since": target_state.since,
                    "pending": target_state.pending,
                    "last_result": last.to_json() if last else None,
                }
            )
        rows.append(
            {
                "customer": key[0],
                "customer_name": customers[key[0]].name,
                "service": key[1],
                "service_name": services[key[1]].name,
                "status": state.status.value,
                "since": state.since,
                "reason": state.reason,
                "checks": checks,
                "vendor": [state.to_json() for state in daemon.vendor.for_subscription(*key)],
            }
        )
    return {"generated_at": daemon.wall(), "config_digest": catalog.digest, "subscriptions": rows}
