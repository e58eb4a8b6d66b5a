"""The one shape of the API's error answers.

Every 4xx the API answers for a bad body, query or id (401 and 403 aside, which
carry ``WWW-Authenticate``) is JSON::

    {"status": "error", "message": "field: what is wrong; …",
     "errors": [{"field": "field", "message": "what is wrong"}, …]}

``message`` is the whole story for a person; ``errors`` names each field for a
program. A problem with the body as a whole has the field ``body``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from aiohttp import web

from monitor.config import ConfigIssue


def refusal(
    answer: type[web.HTTPClientError], issues: Iterable[ConfigIssue]
) -> web.HTTPClientError:
    """``answer`` (400, 404, 409 …) with a JSON body naming each problem."""
    listed = sorted(set(issues))
    document = {
        "status": "error",
        "message": "; ".join(str(issue) for issue in listed),
        "errors": [{"field": issue.path, "message": issue.message} for issue in listed],
    }
    return answer(text=json.dumps(document), content_type="application/json")


def bad_request(field: str, message: str) -> web.HTTPClientError:
    """400 for one problem with ``field`` (``body`` for the body as a whole)."""
    return refusal(web.HTTPBadRequest, [ConfigIssue(field, message)])


def invalid_body(issues: Iterable[ConfigIssue]) -> web.HTTPClientError:
    """400 naming each bad field."""
    return refusal(web.HTTPBadRequest, issues)
