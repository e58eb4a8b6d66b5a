"""The http check against real aiohttp.web servers on 127.0.0.1 (plain and trustme TLS)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from pydantic import ValidationError

import checks.http
from checks import CheckType
from checks.http import Options, probe
from monitor.probe import ProbeContext, ProbeResult, Target
from monitor.runner import run_probe

TARGET = Target("contoso", "portal", "home", "http")
TOKEN = "s3cret-token-value"


@dataclass
class Server:
    port: int
    tls_port: int
    ca_file: str
    cert_not_after: float
    cert_serial: int
    requests: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.tls_port}{path}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def server(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Server]:
    cert = ca.issue_cert("127.0.0.1")
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ssl)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    seen: list[dict[str, Any]] = []

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="hello, service is ok")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def document(request: web.Request) -> web.Response:
        return web.json_response({"status": "down", "data": {"items": [{"state": "running"}]}})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query["s"]))
        return web.Response(text="late")

    async def record(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )
        if request.headers.get("Authorization") == f"Bearer {TOKEN}":  # a careless server
            return web.json_response({"auth": request.headers["Authorization"]}, status=503)
        return web.Response(text="recorded")

    async def echo(request: web.Request) -> web.Response:  # a debug endpoint
        return web.json_response({"headers": dict(request.headers)})

    async def deep(request: web.Request) -> web.Response:
        return web.Response(text="[" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/echo", echo)
    app.router.add_get("/deep", deep)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/json", document)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/record", record)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # slow handlers outlive their client
    await runner.setup()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await plain.start()
    await tls.start()
    (_, port), (_, tls_port) = runner.addresses[:2]
    try:
        yield Server(
            port=port,
            tls_port=tls_port,
            ca_file=str(ca_file),
            cert_not_after=leaf.not_valid_after_utc.timestamp(),
            cert_serial=leaf.serial_number,
            requests=seen,
        )
    finally:
        await runner.cleanup()


async def check(ctx: ProbeContext, **options: Any) -> ProbeResult:
    return await probe(TARGET, Options(**options), ctx)


async def test_ok_with_phases_and_facts(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url())
    assert result.success, result.reason
    assert set(result.phases) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert result.phases["connect"] > 0 and result.phases["processing"] > 0
    assert result.phases["tls"] == 0
    assert result.facts == {
        "http_status_code": 200,
        "http_redirects": 0,
        "http_ssl": 0,
        "http_version": 1.1,
        "http_content_length": 20,
        "http_uncompressed_body_length": 20,
        "dns_lookup_time_seconds": 0.0,  # an address: nothing to resolve
        "ip_protocol": 4,
        "ip_addr_hash": 144_953_630,  # blackbox's FNV-1a of "127.0.0.1"
        "failed_due_to_regex": 0,
    }
    assert result.info == {}  # no TLS: no tls_version_info, no certificate


async def test_wrong_status(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url("/status/503"))
    assert not result.success
    assert result.reason == "status 503 (expected 200)"
    assert result.facts["http_status_code"] == 503


async def test_status_classes(server: Server, probe_ctx: ProbeContext) -> None:
    assert (await check(probe_ctx, url=server.url("/status/204"), expect_status=["2xx"])).success
    result = await check(probe_ctx, url=server.url("/status/404"), expect_status=[401, "2xx"])
    assert result.reason == "status 404 (expected 401, 2xx)"


async def test_body_regex(server: Server, probe_ctx: ProbeContext) -> None:
    assert (await check(probe_ctx, url=server.url(), body_regex=r"service is \w+")).success
    result = await check(probe_ctx, url=server.url(), body_regex="healthy")
    assert result.reason == "body does not match 'healthy'"
    assert result.facts["failed_due_to_regex"] == 1
    result = await check(probe_ctx, url=server.url(), body_not_regex="hello")
    assert result.reason == "body matches 'hello'"
    assert result.facts["failed_due_to_regex"] == 1
    result = await check(probe_ctx, url=server.url("/status/503"), body_regex="hello")
    assert result.facts["failed_due_to_regex"] == 0  # the status failed it, not the regex


async def test_body_read_is_capped(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url(), body_regex="ok", max_body_bytes=5)
    assert result.reason == "body does not match 'ok'"
    assert result.facts["http_content_length"] == 20  # from the header, not what was read


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"json_path": "data.items[0].state", "json_expect": "running"}, ""),
        ({"json_path": "data.items[0]"}, ""),
        (
            {"json_path": "status", "json_expect": "ok"},
            "json path 'status' is 'down', expected 'ok'",
        ),
        ({"json_path": "data.items[1].state"}, "json path 'data.items[1].state' not found"),
        ({"json_path": "data.missing", "json_expect": 1}, "json path 'data.missing' not found"),
    ],
)
async def test_json_path(
    server: Server, probe_ctx: ProbeContext, options: dict[str, Any], reason: str
) -> None:
    result = await check(probe_ctx, url=server.url("/json"), **options)
    assert (result.success, result.reason) == (not reason, reason)


async def test_json_path_on_non_json_body(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url(), json_path="status")
    assert result.reason == "body is not JSON"


async def test_redirect_followed(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url("/redirect"), max_redirects=1)
    assert result.success, result.reason
    assert result.facts["http_redirects"] == 1


async def test_redirect_not_followed(server: Server, probe_ctx: ProbeContext) -> None:
    url = server.url("/redirect")
    result = await check(probe_ctx, url=url, follow_redirects=False, expect_status=[302])
    assert result.success, result.reason
    assert (result.facts["http_status_code"], result.facts["http_redirects"]) == (302, 0)
    result = await check(probe_ctx, url=url, follow_redirects=False)
    assert result.reason == "status 302 (expected 200)"


async def test_too_many_redirects(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.url("/loop"), max_redirects=3)
    assert result.reason == "too many redirects (more than 3)"
    result = await check(probe_ctx, url=server.url("/redirect"), max_redirects=0)
    assert result.reason == "too many redirects (more than 0)"


async def test_connection_refused(free_port: int, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=f"http://127.0.0.1:{free_port}/")
    assert (result.success, result.reason) == (False, "connection refused")


async def test_timeout_through_runner(server: Server, probe_ctx: ProbeContext) -> None:
    ctx = ProbeContext(http=probe_ctx.http, timeout=0.3)
    check_type = CheckType.from_module("http", checks.http)
    result = await run_probe(check_type, TARGET, Options(url=server.url("/slow?s=2")), ctx)
    assert (result.success, result.plugin_error) == (False, False)
    assert result.reason == "timeout after 0.3s"


async def test_slow_is_degraded_through_runner(server: Server, probe_ctx: ProbeContext) -> None:
    ctx = ProbeContext(http=probe_ctx.http, timeout=5, degraded_latency=0.05)
    check_type = CheckType.from_module("http", checks.http)
    result = await run_probe(check_type, TARGET, Options(url=server.url("/slow?s=0.2")), ctx)
    assert (result.success, result.degraded) == (True, True)
    assert result.reason.startswith("slow: ")


async def test_headers_and_post_body_sent(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(
        probe_ctx,
        url=server.url("/record"),
        method="post",
        headers={"X-Tenant": "contoso"},
        body='{"ping": 1}',
    )
    assert result.success, result.reason
    [request] = server.requests
    assert (request["method"], request["body"]) == ("POST", '{"ping": 1}')
    assert request["headers"]["X-Tenant"] == "contoso"
    assert request["headers"]["User-Agent"] == "csp-monitor"


async def test_bearer_token_sent_never_in_reason(server: Server, probe_ctx: ProbeContext) -> None:
    url = server.url("/record")
    result = await check(probe_ctx, url=url, bearer_token=TOKEN, body_regex="recorded")
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert result.reason == "status 503 (expected 200)"
    # The server echoes the token into the value the reason quotes: it is masked.
    result = await check(
        probe_ctx,
        url=url,
        bearer_token=TOKEN,
        expect_status=[503],
        json_path="auth",
        json_expect="ok",
    )
    assert result.reason == "json path 'auth' is 'Bearer ***', expected 'ok'"
    assert TOKEN not in repr(Options(url=url, bearer_token=TOKEN))


async def test_basic_auth_sent(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(
        probe_ctx, url=server.url("/record"), basic_auth_user="probe", basic_auth_password="pw"
    )
    assert result.success, result.reason
    assert server.requests[0]["headers"]["Authorization"] == "Basic cHJvYmU6cHc="


async def test_credentials_a_target_echoes_are_hidden(
    server: Server, probe_ctx: ProbeContext
) -> None:
    def quoting(header: str) -> dict[str, Any]:  # a reason that quotes the echoed header
        return {"url": server.url("/echo"), "json_path": f"headers.{header}", "json_expect": "x"}

    result = await check(
        probe_ctx, basic_auth_user="probe", basic_auth_password="pw", **quoting("Authorization")
    )
    assert result.reason == "json path 'headers.Authorization' is 'Basic ***', expected 'x'"
    api_key = "k3y-" + "0123456789" * 8  # longer than a reason quotes: cut after 60
    result = await check(
        probe_ctx, headers={"X-Api-Key": api_key, "X-Tenant": "contoso"}, **quoting("X-Api-Key")
    )
    assert result.reason == "json path 'headers.X-Api-Key' is '***', expected 'x'"
    result = await check(probe_ctx, headers={"X-Tenant": "contoso"}, **quoting("X-Tenant"))
    assert result.reason == "json path 'headers.X-Tenant' is '***', expected 'x'"
    result = await check(probe_ctx, headers={"X-Debug": "1"}, **quoting("X-Debug"))
    assert result.reason == "json path 'headers.X-Debug' is '***', expected 'x'"
    result = await check(probe_ctx, url=server.url("/status/503"), headers={"X-Debug": "5"})
    assert result.reason == "status 503 (expected 200)"
    assert "cHJvYmU6cHc" not in result.reason and api_key[:20] not in result.reason


async def test_a_body_nested_too_deep_is_the_targets_failure(
    server: Server, probe_ctx: ProbeContext
) -> None:
    http = CheckType.from_module("http", checks.http)
    result = await run_probe(
        http, TARGET, Options(url=server.url("/deep"), json_path="status"), probe_ctx
    )
    assert (result.success, result.plugin_error) == (False, False)
    assert result.reason == "body is not JSON: nested too deep"


async def test_https_with_trusted_ca(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(
        probe_ctx,
        url=server.tls_url("/json"),
        ca_file=server.ca_file,
        json_path="data.items[0].state",
        json_expect="running",
    )
    assert result.success, result.reason
    assert result.phases["tls"] > 0 and result.phases["connect"] > 0
    assert result.facts["http_ssl"] == 1
    assert result.facts["ssl_earliest_cert_expiry"] == server.cert_not_after
    # the verified chain ends at the test CA, which outlives the leaf
    assert result.facts["ssl_last_chain_expiry_timestamp_seconds"] == server.cert_not_after
    assert result.info["tls_version_info"] == {"version": "TLS 1.3"}
    chain_info = result.info["ssl_last_chain_info"]
    assert chain_info["subjectalternative"] == "127.0.0.1"
    assert chain_info["serialnumber"] == format(server.cert_serial, "x")
    assert len(chain_info["fingerprint_sha256"]) == 64


async def test_https_without_verification(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.tls_url(), tls_verify=False)
    assert result.success, result.reason
    assert result.facts["ssl_earliest_cert_expiry"] == server.cert_not_after
    # nothing was verified: no verified chain to report on (as in blackbox)
    assert "ssl_last_chain_expiry_timestamp_seconds" not in result.facts


async def test_https_untrusted_ca(server: Server, probe_ctx: ProbeContext) -> None:
    result = await check(probe_ctx, url=server.tls_url())
    assert not result.success
    assert result.reason == (
        "certificate verification failed: unable to get local issuer certificate"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"url": "ftp://example.com/"},
        {"url": "not a url"},
        {"url": "http://x/", "expect_status": ["2xy"]},
        {"url": "http://x/", "expect_status": [99]},
        {"url": "http://x/", "body_regex": "("},
        {"url": "http://x/", "json_path": "a..b"},
        {"url": "http://x/", "json_expect": "ok"},
        {"url": "http://x/", "basic_auth_user": "u"},
        {"url": "http://x/", "bearer_token": "t", "headers": {"authorization": "x"}},
        {"url": "http://x/", "timeout": 3},
    ],
)
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Options(**options)
