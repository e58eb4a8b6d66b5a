"""Who is using the console: sign-in with an API token, the session cookie, CSRF, sign-out.

Roles are the API's (``monitor.api.auth.holds``): pages need ``read``, actions
need ``operate``. Every POST carries the session's CSRF token, and the cookie is
``SameSite=Strict`` besides: a page elsewhere cannot act in someone's name.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from monitor.api.auth import find_token, holds
from monitor.api.input import clean_text
from monitor.api.services import SERVICES
from monitor.catalog import Catalog
from monitor.config.models import ApiToken
from monitor.console.keys import SESSION, console_key
from monitor.console.pages import LANGUAGE_COOKIE, LANGUAGES, Pages, base_path, language
from monitor.console.sessions import PERSON_MAX_CHARS, Session, SessionKeeper, SignInThrottle
from monitor.timezones import known_zone

log = logging.getLogger(__name__)

SESSION_COOKIE = "csp_console_session"
SIGN_IN_COOKIE = "csp_console_signin"  # the sign-in form's nonce (its CSRF pair)
CSRF_FIELD = "csrf"


class ConsoleState:
    """The console's own parts, made once per application: templates, the session key
    (read from the data directory when first needed) and the sign-in throttle."""

    def __init__(self) -> None:
        self.pages = Pages()
        self._keeper: SessionKeeper | None = None
        self._throttle: SignInThrottle | None = None
        self.status_key: bytes | None = None  # the customers' status links (status_page.py)

    def keeper(self, request: web.Request) -> SessionKeeper:
        if self._keeper is None:
            services = request.app[SERVICES]
            catalog = _catalog(request)
            base = services.config_path.resolve().parent
            key = console_key(catalog, base, SESSION)
            self._keeper = SessionKeeper(key, services.wall)
        return self._keeper

    def throttle(self, request: web.Request) -> SignInThrottle:
        allowed = _catalog(request).config.monitor.console.sign_in_attempts
        if self._throttle is None:
            self._throttle = SignInThrottle(allowed, request.app[SERVICES].wall)
        self._throttle.allowed = allowed  # a reload may change it
        return self._throttle


CONSOLE: web.AppKey[ConsoleState] = web.AppKey("console")


@dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in person on one request."""

    session: Session
    token: ApiToken
    csrf: str

    @property
    def can_operate(self) -> bool:
        return holds(self.token, "operate")


def _catalog(request: web.Request) -> Catalog:
    catalog = request.app[SERVICES].catalog
    if catalog is None:
        raise web.HTTPServiceUnavailable(text="the console is not running yet\n")
    return catalog


def _tokens(request: web.Request) -> list[ApiToken]:
    return list(_catalog(request).config.monitor.api_tokens)


def page_context(request: web.Request, visitor: Visitor | None, **values: Any) -> dict[str, Any]:
    """What every page's layout needs, plus ``values``."""
    catalog = _catalog(request)
    lang = language(request)
    other = "en" if lang == "zh-CN" else "zh-CN"
    return {
        "lang": lang,
        # relative to the page, so that it works under a proxy's base path too
        "lang_url": "?" + request.rel_url.update_query(lang=other).query_string,
        "timezone": known_zone(catalog.config.reports.timezone),
        "base": base_path(catalog.config.monitor.public_url),
        "visitor": visitor,
        "csrf_field": CSRF_FIELD,
        **values,
    }


def render(
    request: web.Request,
    template: str,
    visitor: Visitor | None,
    status: int = 200,
    **values: Any,
) -> web.Response:
    """The page ``template`` for this request; a ``?lang=`` switch is remembered in a cookie."""
    response = request.app[CONSOLE].pages.html(
        template, page_context(request, visitor, **values), status
    )
    chosen = request.query.get("lang")
    if chosen in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, chosen, max_age=365 * 86400, samesite="Strict", httponly=True
        )
    return response


def _secure(request: web.Request) -> bool:
    public_url = _catalog(request).config.monitor.public_url or ""
    return public_url.lower().startswith("https://")


def visitor(request: web.Request) -> Visitor | None:
    """The signed-in person, or None."""
    state = request.app[CONSOLE]
    keeper = state.keeper(request)
    found = keeper.read(request.cookies.get(SESSION_COOKIE, ""), _tokens(request))
    if found is None:
        return None
    session, token = found
    if not holds(token, "read"):
        return None
    return Visitor(session, token, keeper.csrf(session.sid))


def _local_path(request: web.Request, target: str | None) -> str:
    """``target`` when it is a path on this console (never another site), else the board."""
    base = base_path(_catalog(request).config.monitor.public_url)
    # browsers drop tabs and newlines from a URL and read a backslash as a slash:
    # "/\t/evil.example" would become "//evil.example", another site
    if (
        target
        and target.isascii()
        and target.isprintable()
        and " " not in target
        and "\\" not in target
        and target.startswith("/")
        and not target.startswith("//")
    ):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return f"{base}/board"


def require_visitor(request: web.Request) -> Visitor:
    """The signed-in person; a page asked without a session goes to the sign-in form
    and comes back after it; a script's request (the board's refresh) gets 401."""
    found = visitor(request)
    if found is not None:
        return found
    if request.headers.get("X-Requested-With") == "console":
        raise web.HTTPUnauthorized(text="signed out\n")
    base = base_path(_catalog(request).config.monitor.public_url)
    # the proxy strips the base path from what reaches us: put it back for the browser
    back = f"{base}{request.path_qs}" if request.method == "GET" else f"{base}/board"
    raise web.HTTPSeeOther(f"{base}/signin?next={quote(back, safe='')}")


async def form_of(request: web.Request, who: Visitor) -> dict[str, str]:
    """The posted form, after its CSRF token was checked (403 page otherwise)."""
    try:
        posted = await request.post()
    except ValueError:  # UnicodeDecodeError among them
        raise _refused(request, who, "form_unreadable", 400) from None
    form = {key: value for key, value in posted.items() if isinstance(value, str)}
    keeper = request.app[CONSOLE].keeper(request)
    if not keeper.csrf_ok(who.session.sid, form.get(CSRF_FIELD)):
        log.warning(
            "event=console_csrf_refused path=%s remote=%s token=%s",
            request.path,
            request.remote,
            who.token.name,
        )
        raise _refused(request, who, "csrf_refused", 403)
    return form


def require_operate(request: web.Request, who: Visitor) -> None:
    """403 unless the person's token holds role ``operate``, as the API requires."""
    if not who.can_operate:
        log.warning(
            "event=console_role_refused path=%s token=%s role=operate", request.path, who.token.name
        )
        raise _refused(request, who, "lacks_operate", 403)


def _refused(
    request: web.Request, who: Visitor | None, word: str, status: int
) -> web.HTTPException:
    return as_exception(render(request, "refused.html.j2", who, status=status, problem=word))


_ANSWERS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


def as_exception(response: web.Response) -> web.HTTPException:
    """A rendered page raised as the HTTP answer (aiohttp answers an HTTPException)."""
    answer = _ANSWERS[response.status]
    return answer(
        text=response.text, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


# ------------------------------------------------------------------ handlers


async def sign_in_page(request: web.Request) -> web.Response:
    if visitor(request) is not None:
        raise web.HTTPSeeOther(_local_path(request, request.query.get("next")))
    return _sign_in_form(request)


def _sign_in_form(
    request: web.Request,
    problem: str | None = None,
    status: int = 200,
    *,
    next_path: str | None = None,
    wait: int = 0,
) -> web.Response:
    """The sign-in form, with a fresh nonce cookie and the CSRF token paired with it."""
    nonce = secrets.token_urlsafe(16)
    keeper = request.app[CONSOLE].keeper(request)
    response = render(
        request,
        "signin.html.j2",
        None,
        status=status,
        problem=problem,
        form_csrf=keeper.csrf("sign-in:" + nonce),
        next=_local_path(request, next_path or request.query.get("next")),
        signed_out=request.query.get("signed_out") == "1",
        wait=wait,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=3600,
    )
    return response


async def sign_in(request: web.Request) -> web.Response:
    state = request.app[CONSOLE]
    keeper, throttle = state.keeper(request), state.throttle(request)
    try:
        posted = await request.post()
    except ValueError:
        return _sign_in_form(request, "form_unreadable", 400)
    form = {key: value for key, value in posted.items() if isinstance(value, str)}
    nonce = request.cookies.get(SIGN_IN_COOKIE, "")
    if not nonce or not keeper.csrf_ok("sign-in:" + nonce, form.get(CSRF_FIELD)):
        return _sign_in_form(request, "csrf_refused", 403, next_path=form.get("next"))
    address = request.remote or "-"
    wait = throttle.wait(address)
    if wait > 0:
        log.warning("event=console_sign_in_throttled remote=%s wait_seconds=%.0f", address, wait)
        response = _sign_in_form(
            request, "too_many_tries", 429, next_path=form.get("next"), wait=int(wait) + 1
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    token = find_token(_tokens(request), form.get("token", "").strip())
    if token is None or not holds(token, "read"):
        throttle.failed(address)
        log.warning(
            "event=console_sign_in_refused remote=%s token=%s",
            address,
            token.name if token else "-",
        )
        return _sign_in_form(request, "unknown_token", 401, next_path=form.get("next"))
    throttle.succeeded(address)
    person = clean_text(form.get("person", ""), multiline=False)[:PERSON_MAX_CHARS]
    ttl = _catalog(request).config.monitor.console.session_ttl
    cookie, _ = keeper.issue(token, person, ttl)
    log.info("event=console_signed_in token=%s person=%r remote=%s", token.name, person, address)
    response = web.HTTPSeeOther(_local_path(request, form.get("next")))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(ttl),
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    response.del_cookie(SIGN_IN_COOKIE)
    raise response


async def sign_out(request: web.Request) -> web.Response:
    who = require_visitor(request)
    await form_of(request, who)
    request.app[CONSOLE].keeper(request).revoke(who.session)
    log.info("event=console_signed_out token=%s person=%r", who.token.name, who.session.person)
    base = base_path(_catalog(request).config.monitor.public_url)
    response = web.HTTPSeeOther(f"{base}/signin?signed_out=1")
    response.del_cookie(SESSION_COOKIE)
    raise response
