"""Who may call the API: bearer tokens with roles, and the count of refusals.

Reads are open unless ``monitor.protect_reads`` is set; anything that changes
state needs a bearer token with the right role (``monitor.api_tokens``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import Counter

from monitor.api.services import SERVICES
from monitor.config.models import ApiToken

log = logging.getLogger(__name__)

AUTH_REFUSED: web.AppKey[Counter] = web.AppKey("auth_refused")
# Why a request's credentials were refused: the label values of AUTH_REFUSED.
REFUSAL_REASONS = ("missing", "malformed", "unknown_token", "lacks_role")


def count_refusals(app: web.Application) -> None:
    """Register the refusal counter in the services' registry, every reason at zero."""
    app[AUTH_REFUSED] = Counter(
        "csp_monitor_api_auth_refused",
        "API requests refused for their credentials, by reason "
        "(missing, malformed, unknown_token, lacks_role)",
        ["reason"],
        registry=app[SERVICES].registry,
    )
    for reason in REFUSAL_REASONS:
        app[AUTH_REFUSED].labels(reason)


def require_role(request: web.Request, role: str) -> str:
    """The token's name, or 401/403 unless the request carries a token with ``role``.

    ``admin`` holds every role and ``operate`` includes ``read``.
    """
    catalog = request.app[SERVICES].catalog
    tokens = catalog.config.monitor.api_tokens if catalog else []
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
    token = find_token(tokens, presented)
    if token is not None:
        if holds(token, role):
            return token.name
        _refused(request, "lacks_role", role, token.name)
        raise web.HTTPForbidden(text=f"token {token.name!r} lacks role {role}\n")
    _refused(request, "unknown_token", role)
    raise web.HTTPUnauthorized(
        text="unknown token\n", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def find_token(tokens: Sequence[ApiToken], presented: str) -> ApiToken | None:
    """The configured token whose secret is ``presented`` (compared in constant time), or
    None. The console's sign-in uses it too: one definition of who a token is."""
    if not (presented.isascii() and presented.isprintable()):
        return None
    for token in tokens:
        secret = token.token.get_secret_value()
        if secret and hmac.compare_digest(secret.encode(), presented.encode()):
            return token
    return None


def holds(token: ApiToken, role: str) -> bool:
    """Whether ``token`` may act as ``role``: ``admin`` holds every role and ``operate``
    includes ``read``."""
    held = set(token.roles)
    return "admin" in held or role in held or (role == "read" and "operate" in held)


def require_read(request: web.Request) -> None:
    """401/403 unless reads are open or the request carries a token with role ``read``."""
    catalog = request.app[SERVICES].catalog
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
