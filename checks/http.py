"""``http``: request a URL and assert on status, body and JSON, like blackbox's http prober.

Phases follow blackbox_exporter: ``resolve``, ``connect`` (TCP), ``tls`` (handshake),
``processing`` (connection ready -> response headers) and ``transfer`` (body read),
each summed over redirects. They come from :func:`trace_config`, which the shared
session must be built with, and from an ``SSLObject`` subclass that stamps the start
of each TLS handshake (aiohttp's "connection create" span covers TCP and TLS at once).
"""

from __future__ import annotations

import functools
import json
import re
import ssl
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target, describe_error, failure

try:  # decodes the certificate when verification is off (getpeercert() is then empty)
    from cryptography import x509
except ImportError:  # pragma: no cover - cryptography comes with trustme, not with aiohttp
    x509 = None  # type: ignore[assignment]

METRIC_HELP = {
    "http_status_code": "HTTP status code of the final response",
    "http_content_length": "Content-Length of the response, or the bytes read without one",
    "http_redirects": "Number of redirects followed",
    "http_ssl": "1 if the final response came over TLS",
    "http_version": "HTTP version of the final response",
    "ssl_earliest_cert_expiry": "Unix time when the peer certificate expires",
}
_STATUS_CLASS = re.compile(r"[1-5]xx")
_JSON_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")
_MISSING = object()


class Options(CheckOptions):
    url: str = Field(description="http:// or https:// URL to request")
    method: str = Field("GET", pattern=r"^[A-Za-z]+$", description="HTTP method")
    headers: dict[str, str] = Field({}, description="Extra request headers (no secrets here)")
    body: str | None = Field(None, description="Request body, sent as UTF-8")
    expect_status: list[int | str] = Field(
        [200], min_length=1, description="Accepted status codes, or classes such as '2xx'"
    )
    body_regex: str | None = Field(None, description="Regular expression the body must match")
    body_not_regex: str | None = Field(None, description="Regular expression that fails the check")
    json_path: str | None = Field(None, description="Dotted path into a JSON body: data.items[0].x")
    json_expect: str | bool | int | float | None = Field(
        None, description="Value expected at json_path; without it the path must merely exist"
    )
    follow_redirects: bool = Field(True, description="Follow 301/302/303/307/308 responses")
    max_redirects: int = Field(10, ge=0, le=100, description="Redirects followed before failing")
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's"
    )
    basic_auth_user: str | None = Field(None, description="User name for HTTP basic auth")
    basic_auth_password: SecretStr | None = Field(None, description="Password for HTTP basic auth")
    bearer_token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer …'")
    max_body_bytes: int = Field(
        1_048_576, ge=1, le=67_108_864, description="Read at most this much of the body"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("expect_status")
    @classmethod
    def _status_codes(cls, value: list[int | str]) -> list[int | str]:
        for code in value:
            if isinstance(code, str) and not _STATUS_CLASS.fullmatch(code):
                raise ValueError(f"{code!r} is not a status code or a class like '2xx'")
            if isinstance(code, int) and not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status code")
        return value

    @field_validator("body_regex", "body_not_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("json_path")
    @classmethod
    def _json_path(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_json_path(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Options:
        if self.json_expect is not None and self.json_path is None:
            raise ValueError("json_expect needs json_path")
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        if self.basic_auth_user is not None and self.bearer_token is not None:
            raise ValueError("use basic auth or bearer_token, not both")
        has_auth = self.basic_auth_user is not None or self.bearer_token is not None
        if has_auth and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("an Authorization header conflicts with basic auth/bearer_token")
        return self

    @functools.cached_property
    def plan(self) -> _Plan:
        """Everything derived from the options once, not on every probe."""
        headers = (
            {"User-Agent": "csp-monitor"}
            if not any(name.lower() == "user-agent" for name in self.headers)
            else {}
        )
        headers.update(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        elif self.basic_auth_user is not None and self.basic_auth_password is not None:
            headers["Authorization"] = aiohttp.BasicAuth(
                self.basic_auth_user, self.basic_auth_password.get_secret_value()
            ).encode()
        codes = [code for code in self.expect_status if isinstance(code, int)]
        classes = [int(code[0]) for code in self.expect_status if isinstance(code, str)]
        return _Plan(
            method=self.method.upper(),
            url=URL(self.url),
            headers=headers,
            data=self.body.encode() if self.body is not None else None,
            codes=frozenset(codes),
            classes=frozenset(classes),
            expected=", ".join(str(code) for code in self.expect_status),
            body_regex=re.compile(self.body_regex) if self.body_regex else None,
            body_not_regex=re.compile(self.body_not_regex) if self.body_not_regex else None,
            json_path=_parse_json_path(self.json_path) if self.json_path else None,
            json_expect=self.json_expect,
            # aiohttp raises once `redirects >= max_redirects`, and 0 means unlimited.
            aiohttp_max_redirects=self.max_redirects + 1,
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    method: str
    url: URL
    headers: dict[str, str]
    data: bytes | None
    codes: frozenset[int]
    classes: frozenset[int]
    expected: str
    body_regex: re.Pattern[str] | None
    body_not_regex: re.Pattern[str] | None
    json_path: tuple[str | int, ...] | None
    json_expect: str | bool | int | float | None
    aiohttp_max_redirects: int


def _parse_json_path(path: str) -> tuple[str | int, ...]:
    tokens: list[str | int] = []
    position = 0
    for match in _JSON_PATH_TOKEN.finditer(path):
        if match.start() != position or (position == 0 and path.startswith(".")):
            break
        name, index = match.groups()
        tokens.append(int(index) if index is not None else name)
        position = match.end()
    if position != len(path) or not tokens:
        raise ValueError(f"invalid JSON path {path!r}: use names and [index], e.g. a.b[0].c")
    return tuple(tokens)


class _Timeline:
    """Per-request phase accumulator, filled by the trace callbacks and the TLS hook."""

    __slots__ = (
        "clock",
        "conn_start",
        "connect",
        "dns_start",
        "hop_start",
        "processing",
        "resolve",
        "ssl_object",
        "tls",
        "tls_start",
    )

    def __init__(self, clock: Callable[[], float], started: float) -> None:
        self.clock = clock
        self.hop_start = started
        self.resolve = self.connect = self.tls = self.processing = 0.0
        self.dns_start = self.conn_start = self.tls_start = 0.0
        self.ssl_object: ssl.SSLObject | None = None


_TIMELINE: ContextVar[_Timeline | None] = ContextVar("csp_monitor_http_timeline", default=None)


class _TimedSSLObject(ssl.SSLObject):
    """Stamps the TLS handshake start (= TCP connected) on the current probe's timeline.

    asyncio and uvloop call ``do_handshake`` first from ``connection_made``, which runs
    in a copy of the probe task's context, so the context variable finds the timeline.
    If it does not (another event loop), the tls phase stays inside ``connect``.
    """

    def do_handshake(self) -> None:
        timeline = _TIMELINE.get()
        if timeline is not None and not timeline.tls_start:
            timeline.tls_start = timeline.clock()
        super().do_handshake()
        if timeline is not None:
            timeline.ssl_object = self


async def _dns_start(_: aiohttp.ClientSession, trace: SimpleNamespace, __: object) -> None:
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        timeline.dns_start = timeline.clock()


async def _dns_end(_: aiohttp.ClientSession, trace: SimpleNamespace, __: object) -> None:
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        timeline.resolve += timeline.clock() - timeline.dns_start


async def _connect_start(_: aiohttp.ClientSession, trace: SimpleNamespace, __: object) -> None:
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        timeline.conn_start = timeline.clock()
        timeline.tls_start = 0.0


async def _connect_end(_: aiohttp.ClientSession, trace: SimpleNamespace, __: object) -> None:
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        now = timeline.hop_start = timeline.clock()
        if timeline.tls_start:
            timeline.tls += now - timeline.tls_start
            now = timeline.tls_start
        timeline.connect += now - timeline.conn_start


async def _redirect(_: aiohttp.ClientSession, trace: SimpleNamespace, __: object) -> None:
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        now = timeline.clock()
        timeline.processing += now - timeline.hop_start
        timeline.hop_start = now


def trace_config() -> aiohttp.TraceConfig:
    """The tracing the shared session needs for the http check's phases (few, cheap hooks)."""
    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_dns_start)
    config.on_dns_resolvehost_end.append(_dns_end)
    config.on_connection_create_start.append(_connect_start)
    config.on_connection_create_end.append(_connect_end)
    config.on_request_redirect.append(_redirect)
    return config


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    plan = opts.plan
    started = ctx.monotonic()
    timeline = _Timeline(ctx.monotonic, started)
    ssl_context = ctx.ssl_context(opts.tls_verify, opts.ca_file)
    if ssl_context.sslobject_class is not _TimedSSLObject:
        ssl_context.sslobject_class = _TimedSSLObject
    token = _TIMELINE.set(timeline)
    try:
        async with ctx.http.request(
            plan.method,
            plan.url,
            headers=plan.headers,
            data=plan.data,
            ssl=ssl_context,
            allow_redirects=opts.follow_redirects,
            max_redirects=plan.aiohttp_max_redirects,
            trace_request_ctx=timeline,
        ) as resp:
            headers_at = ctx.monotonic()
            timeline.processing += headers_at - timeline.hop_start
            https = resp.url.scheme == "https"
            version = resp.version or aiohttp.HttpVersion11
            facts = {
                "http_status_code": float(resp.status),
                "http_redirects": float(len(resp.history)),
                "http_ssl": 1.0 if https else 0.0,
                "http_version": version.major + version.minor / 10,
            }
            if https and (expiry := _cert_expiry(timeline, resp, opts.tls_verify)) is not None:
                facts["ssl_earliest_cert_expiry"] = expiry
            body = await _read_body(resp.content, opts.max_body_bytes)
            phases = _phases(timeline, ctx.monotonic() - headers_at)
            length = resp.content_length
            facts["http_content_length"] = float(len(body) if length is None else length)
    except aiohttp.TooManyRedirects:
        return failure(f"too many redirects (more than {opts.max_redirects})", started, ctx)
    except aiohttp.ClientConnectorDNSError as exc:
        return failure(f"cannot resolve {exc.host}: {exc.os_error.strerror}", started, ctx)
    except aiohttp.ClientConnectorCertificateError as exc:
        # describe_error() would see an ssl.SSLCertVerificationError (aiohttp subclasses it)
        return failure(describe_error(exc.certificate_error), started, ctx)
    except aiohttp.ClientConnectorSSLError as exc:
        return failure(describe_error(exc.os_error), started, ctx)
    except (aiohttp.ClientError, OSError) as exc:
        return failure(describe_error(exc), started, ctx, **_phases(timeline, 0.0))
    finally:
        _TIMELINE.reset(token)
    reason = _assert_response(plan, resp.status, body)
    result = ProbeResult(
        success=not reason,
        reason=reason,
        duration=ctx.monotonic() - started,
        phases=phases,
        facts=facts,
    )
    return result


def _phases(timeline: _Timeline, transfer: float) -> dict[str, float]:
    return {
        "resolve": timeline.resolve,
        "connect": max(timeline.connect - timeline.resolve, 0.0),
        "tls": timeline.tls,
        "processing": timeline.processing,
        "transfer": transfer,
    }


async def _read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunk = await content.read(limit)
    if not chunk or len(chunk) >= limit or content.at_eof():
        return chunk
    chunks = [chunk]
    size = len(chunk)
    while size < limit and (chunk := await content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _assert_response(plan: _Plan, status: int, body: bytes) -> str:
    """The reason the response fails the check's assertions, or "" when it passes."""
    if status not in plan.codes and status // 100 not in plan.classes:
        return f"status {status} (expected {plan.expected})"
    if plan.body_regex is not None or plan.body_not_regex is not None:
        text = body.decode("utf-8", errors="replace")
        if plan.body_regex is not None and not plan.body_regex.search(text):
            return f"body does not match {plan.body_regex.pattern!r}"
        if plan.body_not_regex is not None and plan.body_not_regex.search(text):
            return f"body matches {plan.body_not_regex.pattern!r}"
    if plan.json_path is not None:
        return _assert_json(plan, body)
    return ""


def _assert_json(plan: _Plan, body: bytes) -> str:
    assert plan.json_path is not None
    path = "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in plan.json_path)
    path = path.removeprefix(".")
    try:
        value: Any = json.loads(body)
    except ValueError:
        return "body is not JSON"
    for token in plan.json_path:
        if isinstance(token, int) and isinstance(value, list) and -len(value) <= token < len(value):
            value = value[token]
        elif isinstance(token, str) and isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return f"json path {path!r} not found"
    return _compare_json(path, value, plan.json_expect)


def _compare_json(path: str, value: Any, expected: str | bool | int | float | None) -> str:
    if expected is None:
        return ""
    # Strict equality (true is not 1); a string expectation also matches a scalar's JSON
    # text, so YAML `json_expect: "200"` accepts 200 and `"true"` accepts true.
    if type(value) is type(expected) and value == expected:
        return ""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not isinstance(expected, bool | str)
        and value == expected
    ):
        return ""
    if (
        isinstance(expected, str)
        and not isinstance(value, dict | list | str)
        and json.dumps(value) == expected
    ):
        return ""
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return f"json path {path!r} is {_clip(shown)}, expected {expected!r}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cert_expiry(timeline: _Timeline, resp: aiohttp.ClientResponse, verified: bool) -> float | None:
    """notAfter of the final hop's certificate (the leaf: Python 3.11 cannot see the chain)."""
    ssl_object = timeline.ssl_object
    if ssl_object is None and resp.connection is not None and resp.connection.transport:
        ssl_object = resp.connection.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    if x509 is not None:
        der = ssl_object.getpeercert(binary_form=True)
        return _der_not_after(der) if der else None
    if verified:  # without cryptography only the verified, decoded form is available
        return float(ssl.cert_time_to_seconds(ssl_object.getpeercert()["notAfter"]))
    return None


@functools.lru_cache(maxsize=256)
def _der_not_after(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
