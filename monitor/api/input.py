"""Request input for the HTTP API: JSON bodies, body models, free text, query numbers.

Every problem becomes a 400 (monitor/api/errors.py) that names the field and what
was expected, never a 500: bodies that are not UTF-8 or nest absurdly deep, values of the wrong JSON
type (``{"note": 5}`` is refused, not stored as ``"5"``; ``null`` never becomes
the text ``"None"``), text over its limit. Free text is cleaned of control
characters before it reaches the store or a message.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from monitor.api.errors import bad_request, invalid_body
from monitor.config import ConfigIssue

NOTE_MAX_CHARS = 16_384
VENDOR_CASE_MAX_CHARS = 256
MAX_JSON_DEPTH = 32  # the deepest body any endpoint accepts is two levels

Model = TypeVar("Model", bound=BaseModel)


def clean_text(value: str, *, multiline: bool = True) -> str:
    """``value`` without control characters: newline and tab survive in multi-line text
    (a CR LF pair becomes a newline); one-line text turns them into spaces."""
    value = value.replace("\r\n", "\n")
    kept = []
    for char in value:
        if char in "\n\t":
            kept.append(char if multiline else " ")
        elif unicodedata.category(char) not in ("Cc", "Cs"):
            kept.append(char)
    return "".join(kept).strip()


def _multiline(value: str) -> str:
    return clean_text(value, multiline=True)


def _one_line(value: str) -> str:
    return clean_text(value, multiline=False)


Note = Annotated[str, StringConstraints(max_length=NOTE_MAX_CHARS), AfterValidator(_multiline)]
"""Free text of at most 16,384 characters, cleaned of control characters."""

CaseNumber = Annotated[
    str, StringConstraints(max_length=VENDOR_CASE_MAX_CHARS), AfterValidator(_one_line)
]
"""One line of at most 256 characters."""


class Body(BaseModel):
    """Base of request bodies: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _shallow_enough(raw: str, limit: int) -> bool:
    """Whether the brackets of ``raw`` (outside strings) nest at most ``limit`` deep:
    checked before parsing, because the parser recurses once per level."""
    if raw.count("[") + raw.count("{") <= limit:  # the usual body: no need to look closer
        return True
    depth = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` without a body); 400 for anything else."""
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            "body", f"the body must be UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    if not _shallow_enough(text, MAX_JSON_DEPTH):
        raise bad_request("body", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = (
            f" ({exc.msg} at line {exc.lineno} column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise bad_request("body", f"the body must be JSON{where}") from None
    if not isinstance(body, dict):
        raise bad_request("body", "the body must be a JSON object")
    return body


def validated(model: type[Model], body: dict[str, Any]) -> Model:
    """``body`` as ``model``; a 400 naming each wrong field and what it needs otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_body(describe(exc)) from None


def describe(exc: ValidationError) -> list[ConfigIssue]:
    """Each problem as (field, what is wrong); the value itself is not echoed."""
    issues = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        issues.append(ConfigIssue(field, _message(error)))
    return issues


def _message(error: Any) -> str:
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "string_type":
        return "must be a string"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this body"
    if kind == "string_too_long":
        return f"at most {context.get('max_length')} characters"
    return str(error["msg"])


def bounded_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    """The query parameter ``name`` as an integer in [low, high]; 400 naming it otherwise."""
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and low <= int(text) <= high):
        raise bad_request(name, f"a whole number from {low} to {high}")
    return int(text)
