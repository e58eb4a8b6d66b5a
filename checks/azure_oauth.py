"""The Azure AD client-credentials sign-in, as both the ``token`` check and the vendor APIs make it.

One place builds the token endpoint URL and the request form, and reads the
answer: the access token, its lifetime, and the part of an OAuth error worth
showing an operator (the ``error`` code and the AADSTS number they can look up).
The HTTP call itself stays with each caller: the ``token`` check times its
phases and verifies TLS its own way, the vendor APIs watch for 429s.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

_AADSTS_CODE = re.compile(r"\bAADSTS\d+\b")
_OAUTH_ERROR = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # RFC 6749 codes look like invalid_client


def token_url(authority: str, tenant: str) -> str:
    """The v2.0 token endpoint of ``tenant`` on the sign-in host ``authority``."""
    return f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token"


def client_credentials_form(client_id: str, client_secret: str, scope: str) -> dict[str, str]:
    """The form an application posts to sign in as itself."""
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
        "scope": scope,
    }


@dataclass(frozen=True)
class TokenAnswer:
    """What a token endpoint answered, read without trusting its shape."""

    status: int
    is_json: bool  # the body is a JSON object
    access_token: str | None = field(default=None, repr=False)
    expires_in: float | None = None  # seconds, when given as a finite number
    error: str = ""  # ': invalid_client (AADSTS7000215)', '' without a usable error code


def read_answer(status: int, body: bytes) -> TokenAnswer:
    """The token, its lifetime and the OAuth error of a token endpoint's response."""
    document = _json_object(body)
    if document is None:
        return TokenAnswer(status, is_json=False)
    token = document.get("access_token")
    return TokenAnswer(
        status,
        is_json=True,
        access_token=token if isinstance(token, str) and token else None,
        expires_in=_expires_in(document),
        error=_oauth_error(document),
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:  # also covers bytes that are not UTF-8
        return None
    return document if isinstance(document, dict) else None


def _oauth_error(document: dict[str, Any]) -> str:
    """': invalid_client (AADSTS7000215)' from an OAuth error response, '' if there is none.

    Only the error code and the AADSTS number are kept: the description is long,
    localised, and may quote request details.
    """
    error = document.get("error")
    if not isinstance(error, str) or not _OAUTH_ERROR.fullmatch(error):
        return ""
    description = document.get("error_description")
    code = _AADSTS_CODE.search(description) if isinstance(description, str) else None
    return f": {error} ({code.group()})" if code else f": {error}"


def _expires_in(document: dict[str, Any]) -> float | None:
    try:
        # v2.0 endpoints send a number, the v1.0 ones a string of digits.
        seconds = float(document["expires_in"])
    except (KeyError, TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None
