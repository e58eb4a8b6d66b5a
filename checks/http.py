"""``http``: request a URL and assert on status, body and JSON, like blackbox's http prober.

Phases (blackbox's resolve, connect, tls, processing, transfer; summed over redirects) come
from :func:`trace_config`, on the shared session, and from an ``SSLObject`` subclass that
stamps each TLS handshake's start: aiohttp's "connection create" span covers TCP and TLS.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import ssl
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import AfterValidator, Field, HttpUrl, SecretStr, model_validator
from yarl import URL

from checks import connection_facts
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target, describe_error, failure

METRIC_HELP = {
    **connection_facts.METRIC_HELP,
    "http_status_code": "HTTP status code of the final response",
    "http_content_length": "Content-Length of the response, or the bytes read without one",
    "http_redirects": "Number of redirects followed",
    "http_ssl": "1 if the final response came over TLS",
    "http_version": "HTTP version of the final response",
    "http_uncompressed_body_length": "Length of the response body after decompression "
    "(at most max_body_bytes)",
    "failed_due_to_regex": "1 if body_regex or body_not_regex failed the probe",
}
JsonScalar = str | bool | int | float
_NAME, _INDEX = r"[^.\[\]]+", r"\[-?\d+\]"
_PATH = re.compile(rf"(?:{_NAME}|{_INDEX})(?:{_INDEX})*(?:\.{_NAME}(?:{_INDEX})*)*")


def _json_path(path: str) -> tuple[str | int, ...]:
    if not _PATH.fullmatch(path):
        raise ValueError("invalid JSON path: use names and [index], e.g. data.items[0].state")
    return tuple(name or int(index) for name, index in re.findall(rf"({_NAME})|\[(-?\d+)\]", path))


StatusCode = Annotated[int, Field(ge=100, le=599)] | Annotated[str, Field(pattern=r"^[1-5]xx$")]
JsonPath = Annotated[str, AfterValidator(lambda path: _json_path(path) and path)]
Method = Annotated[str, Field(pattern=r"^[A-Za-z]+$"), AfterValidator(str.upper)]


class Options(CheckOptions):
    url: HttpUrl = Field(description="http:// or https:// URL to request")
    method: Method = Field("GET", description="HTTP method")
    headers: dict[str, str] = Field(
        {}, description="Request headers; a reason never shows their values (***)"
    )
    body: str | None = Field(None, description="Request body, sent as UTF-8")
    expect_status: list[StatusCode] = Field([200], min_length=1, description="Codes or '2xx'")
    body_regex: re.Pattern[str] | None = Field(None, description="Regex the body must match")
    body_not_regex: re.Pattern[str] | None = Field(None, description="Regex failing the check")
    json_path: JsonPath | None = Field(None, description="e.g. data.items[0].state; must exist")
    json_expect: JsonScalar | None = Field(None, description="Value expected at json_path")
    follow_redirects: bool = Field(True, description="Follow 3xx responses with a Location")
    max_redirects: int = Field(10, ge=0, le=100, description="Redirects to follow at most")
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(None, description="PEM bundle of CAs to trust instead of system's")
    basic_auth_user: str | None = Field(None, description="User name for HTTP basic auth")
    basic_auth_password: SecretStr | None = Field(None, description="Password for basic auth")
    bearer_token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer'")
    max_body_bytes: int = Field(1 << 20, ge=1, le=1 << 26, description="Body bytes read at most")

    @model_validator(mode="after")
    def _consistent(self) -> Options:
        if self.json_expect is not None and self.json_path is None:
            raise ValueError("json_expect needs json_path")
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        header = any(name.lower() == "authorization" for name in self.headers)
        if header + (self.basic_auth_user is not None) + (self.bearer_token is not None) > 1:
            raise ValueError("set only one of basic auth, bearer_token, an Authorization header")
        return self

    @functools.cached_property
    def plan(self) -> _Plan:
        """Everything derived from the options, computed once rather than per probe."""
        headers = CIMultiDict({"User-Agent": "csp-monitor"})
        headers.update(self.headers)  # case-insensitively, so a configured User-Agent wins
        # A target may echo what it was sent (a debug endpoint, an error page): every
        # header value we configure, and each form of a credential, is hidden in reasons.
        hidden = [value for value in self.headers.values() if value]
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
            hidden.append(self.bearer_token.get_secret_value())
        if self.basic_auth_user is not None and self.basic_auth_password is not None:
            password = self.basic_auth_password.get_secret_value()
            pair = f"{self.basic_auth_user}:{password}"
            encoded = base64.b64encode(pair.encode()).decode()
            headers["Authorization"] = f"Basic {encoded}"
            hidden += [password, encoded, encoded.rstrip("=")]
        json_path = _json_path(self.json_path) if self.json_path else None
        secrets = tuple(sorted({v for v in hidden if v}, key=len, reverse=True))
        url = str(URL(str(self.url)))  # encoded once; see _Plan.url
        return _Plan(url, _shared_headers(tuple(headers.items())), json_path, secrets)


@functools.lru_cache(maxsize=1024)
def _shared_headers(items: tuple[tuple[str, str], ...]) -> CIMultiDictProxy[str]:
    """Targets whose requests carry the same headers (most: only the User-Agent) share one
    read-only copy; aiohttp copies it into each request's own."""
    return CIMultiDictProxy(CIMultiDict(items))


@dataclass(frozen=True, slots=True)
class _Plan:
    # The URL as encoded text, made a yarl URL for each request: a URL kept per target
    # keeps the parts aiohttp asks of it too (host, port, path with query …), about 1 KB
    # a target, 50 MB at 50,000 targets; parsing encoded text again costs about 2 µs.
    url: str
    headers: CIMultiDictProxy[str]
    json_path: tuple[str | int, ...] | None
    secrets: tuple[str, ...]  # longest first: a value containing another is hidden whole

    def redact(self, text: str) -> str:
        """``text`` with everything we send that a server could echo shown as ``***``
        (a value of one to three characters only where it stands alone: ``X-Debug: 1``
        must not turn ``status 503`` into ``status 5***3``)."""
        for secret in self.secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
            else:
                text = re.sub(rf"(?<![\w.-]){re.escape(secret)}(?![\w.-])", "***", text)
        return text


@dataclass(slots=True)
class _Timeline:
    """One request's phase accumulators, filled by the trace hooks and the TLS hook."""

    clock: Callable[[], float]
    resolve: float = 0.0
    connect: float = 0.0
    tls: float = 0.0
    dns_start: float = 0.0
    connect_start: float = 0.0
    tls_start: float = 0.0
    ssl_object: ssl.SSLObject | None = None
    peername: Any = None  # the last connection's peer address, from ProbeConnector


_TIMELINE: ContextVar[_Timeline | None] = ContextVar("csp_monitor_http_timeline", default=None)


class _TimedSSLObject(ssl.SSLObject):
    """Stamps the handshake start (TCP connected) and keeps the TLS state for the facts.

    asyncio and uvloop call ``do_handshake`` first from ``connection_made``, in a copy of
    the probe task's context: the context variable finds the timeline. Another event loop
    might not; the handshake would then stay inside ``connect``, with no certificate fact."""

    def do_handshake(self) -> None:
        timeline = _TIMELINE.get()
        if timeline is not None and not timeline.tls_start:
            timeline.tls_start = timeline.clock()
        super().do_handshake()
        if timeline is not None:
            timeline.ssl_object = self


async def _on_dns(_: object, trace: SimpleNamespace, params: object) -> None:
    """Times a DNS lookup, which runs inside the connection-create span."""
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        now = timeline.clock()
        if isinstance(params, aiohttp.TraceDnsResolveHostStartParams):
            timeline.dns_start = now
        else:
            timeline.resolve += now - timeline.dns_start
            timeline.connect -= now - timeline.dns_start


async def _on_connect(_: object, trace: SimpleNamespace, params: object) -> None:
    """Times creating a connection, less the handshake if the TLS hook stamped its start."""
    if isinstance(timeline := trace.trace_request_ctx, _Timeline):
        now = timeline.clock()
        if isinstance(params, aiohttp.TraceConnectionCreateStartParams):
            timeline.connect_start, timeline.tls_start = now, 0.0
        elif timeline.tls_start:
            timeline.tls += now - timeline.tls_start
            timeline.connect += timeline.tls_start - timeline.connect_start
        else:
            timeline.connect += now - timeline.connect_start


class ProbeConnector(aiohttp.TCPConnector):
    """The shared session's connector: notes each new connection's peer address on the
    probe's timeline (``probe_ip_protocol``, ``probe_ip_addr_hash``). The response no longer
    holds its connection once a short body has arrived, and no trace hook carries it."""

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        timeline = _TIMELINE.get()
        if timeline is not None:
            timeline.peername = transport.get_extra_info("peername")
        return transport, protocol


def trace_config() -> aiohttp.TraceConfig:
    """The tracing the shared session needs for the phases: four hooks that only stamp time."""
    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_on_dns)
    config.on_dns_resolvehost_end.append(_on_dns)
    config.on_connection_create_start.append(_on_connect)
    config.on_connection_create_end.append(_on_connect)
    return config


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    plan = opts.plan
    ssl_context = ctx.ssl_context(opts.tls_verify, opts.ca_file)  # also for https redirects
    if ssl_context.sslobject_class is not _TimedSSLObject:
        ssl_context.sslobject_class = _TimedSSLObject  # documented hook; other checks unaffected
    started = ctx.monotonic()  # after the context: building one once takes ~20 ms
    timeline = _Timeline(ctx.monotonic)
    token = _TIMELINE.set(timeline)
    try:
        # aiohttp fails once `redirects >= max_redirects`, and 0 there means unlimited.
        async with ctx.http.request(
            opts.method, URL(plan.url, encoded=True), headers=plan.headers, data=opts.body,
            ssl=ssl_context, allow_redirects=opts.follow_redirects,
            max_redirects=opts.max_redirects + 1, trace_request_ctx=timeline,
        ) as resp:  # fmt: skip
            headers_at = ctx.monotonic()
            version = resp.version or aiohttp.HttpVersion11
            https = resp.url.scheme == "https"
            facts = {
                "http_status_code": float(resp.status),
                "http_redirects": float(len(resp.history)),
                "http_ssl": 1.0 if https else 0.0,
                "http_version": version.major + version.minor / 10,
                # blackbox sets it on every probe that resolves (0 for an address, or a
                # name the session's DNS cache still held)
                "dns_lookup_time_seconds": timeline.resolve,
            }
            facts.update(connection_facts.address_facts(timeline.peername))
            info: dict[str, dict[str, str]] = {}
            if https and timeline.ssl_object is not None:  # the TLS hook saw the handshake
                tls, info = connection_facts.tls_facts(timeline.ssl_object, opts.tls_verify)
                facts.update(tls)
            # Read the body even without assertions: it is the transfer phase, and a
            # server that stalls mid-body is down. max_body_bytes bounds the cost.
            body = await _read_body(resp.content, opts.max_body_bytes)
            phases = _phases(timeline, headers_at - started, ctx.monotonic() - headers_at)
            facts["http_content_length"] = float(resp.content_length or len(body))
            facts["http_uncompressed_body_length"] = float(len(body))
    except (aiohttp.ClientError, OSError) as exc:
        return failure(plan.redact(_describe(exc, opts)), started, ctx)
    finally:
        _TIMELINE.reset(token)
    reason, by_regex = _assert_response(plan, resp.status, body, opts)
    facts["failed_due_to_regex"] = 1.0 if by_regex else 0.0
    reason = plan.redact(reason)
    duration = ctx.monotonic() - started
    return ProbeResult(not reason, duration, reason, phases=phases, facts=facts, info=info)


def _phases(timeline: _Timeline, to_headers: float, transfer: float) -> dict[str, float]:
    """``processing`` is what connection set-ups leave of the time to the final headers:
    sending, the server's work, and earlier redirect hops' responses (as in blackbox)."""
    setup = timeline.resolve + timeline.connect + timeline.tls
    return {"resolve": timeline.resolve, "connect": timeline.connect, "tls": timeline.tls,
            "processing": max(to_headers - setup, 0.0), "transfer": transfer}  # fmt: skip


def _describe(exc: BaseException, opts: Options) -> str:
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects (more than {opts.max_redirects})"
    # These two subclass ssl errors too, and describe_error() reads them as such: unwrap.
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        exc = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorSSLError):
        exc = exc.os_error
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
    return describe_error(exc)


async def _read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    while limit > 0 and (chunk := await content.read(limit)):
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)  # a single chunk is returned as is, not copied


def _assert_response(plan: _Plan, status: int, body: bytes, opts: Options) -> tuple[str, bool]:
    """Why the response fails the check's assertions ("" when it passes), and whether a
    body regex is what failed it (blackbox's ``probe_failed_due_to_regex``)."""
    expected = opts.expect_status
    if status not in expected and f"{status // 100}xx" not in expected:
        return f"status {status} (expected {', '.join(map(str, expected))})", False
    text = body.decode("utf-8", errors="replace") if opts.body_regex or opts.body_not_regex else ""
    if opts.body_regex is not None and not opts.body_regex.search(text):
        return f"body does not match {opts.body_regex.pattern!r}", True
    if opts.body_not_regex is not None and opts.body_not_regex.search(text):
        return f"body matches {opts.body_not_regex.pattern!r}", True
    return _assert_json(plan, body, opts), False


def _assert_json(plan: _Plan, body: bytes, opts: Options) -> str:
    if plan.json_path is None:
        return ""
    try:
        value: Any = json.loads(body)
    except ValueError:
        return "body is not JSON"
    except RecursionError:  # e.g. "[" * 100_000: the target's answer, not a plugin bug
        return "body is not JSON: nested too deep"
    for token in plan.json_path:
        if isinstance(token, int) and isinstance(value, list) and -len(value) <= token < len(value):
            value = value[token]
        elif isinstance(token, str) and isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return f"json path {opts.json_path!r} not found"
    if opts.json_expect is None or _json_equal(value, opts.json_expect):
        return ""
    try:
        shown = repr(value) if isinstance(value, str) else json.dumps(value)
    except RecursionError:  # parsed just below the limit, dumped from deeper in the stack
        shown = "a value nested too deep"
    # Hidden before it is shortened: a secret cut in two would not be recognised.
    shown = plan.redact(shown)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return f"json path {opts.json_path!r} is {shown}, expected {opts.json_expect!r}"


def _json_equal(value: Any, expected: JsonScalar) -> bool:
    if isinstance(expected, str) and not isinstance(value, str):
        return json.dumps(value) == expected  # YAML "200" accepts 200, "true" accepts true
    return bool(value == expected) and isinstance(value, bool) == isinstance(expected, bool)
