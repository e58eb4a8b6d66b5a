"""Rendering console pages: one sandboxed Jinja environment, the words in two languages,
times in the configured zone, and the headers every page carries.

Templates are ours (``monitor/console/templates``) and always autoescaped: a
customer name, a note or a probe's reason is text, never markup. The words a
person reads are in ``templates/words.j2``, English and Chinese side by side;
``t("key")`` picks the request's language (a ``lang`` cookie set by the switch,
else Accept-Language, else English).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from jinja2 import pass_context
from jinja2.runtime import Context

from monitor.notify.templates import _iso, _local, _utc, sandboxed_environment

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
LANGUAGES = ("en", "zh-CN")
LANGUAGE_COOKIE = "csp_console_lang"

# No inline script or style anywhere: what the page runs and wears comes from /static.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # acknowledge links carry their token in the URL: never hand it to another site
    "Referrer-Policy": "no-referrer",
}


def language(request: web.Request) -> str:
    """``en`` or ``zh-CN``: the switch's cookie, else the browser's first choice of the two."""
    chosen = request.query.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


def base_path(public_url: str | None) -> str:
    """The path the console lives under behind a proxy (``/monitor`` for
    ``https://noc.example.cn/monitor``), without a trailing slash; "" at the root."""
    return urlsplit(public_url).path.rstrip("/") if public_url else ""


class Pages:
    """The console's templates and the one way a page becomes a response."""

    def __init__(self) -> None:
        self.env = sandboxed_environment([TEMPLATES], autoescape=lambda name: True)
        self.env.filters.update(local=_local, utc=_utc, iso=_iso)
        self.env.globals["t"] = _translate
        module = self.env.get_template("words.j2").module
        self.words: dict[str, tuple[str, str]] = {
            key: (pair[0], pair[1])
            for key, pair in module.words.items()  # type: ignore[attr-defined]
        }

    def html(self, name: str, context: Mapping[str, Any], status: int = 200) -> web.Response:
        text = self.env.get_template(name).render({**context, "words": self.words})
        response = web.Response(status=status, text=text, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response


@pass_context
def _translate(context: Context, key: str, **values: Any) -> str:
    """The word ``key`` in the page's language, with ``{name}`` fields filled in (the
    result is escaped by the template like any other text)."""
    english, chinese = context["words"][key]
    text: str = chinese if context["lang"] == "zh-CN" else english
    return text.format(**values) if values else text
