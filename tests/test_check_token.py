"""The token check against a real local OAuth2 token endpoint (aiohttp.web on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

import checks
import checks.token
from checks.token import Options, probe
from monitor.probe import ProbeContext, Target
from monitor.runner import run_probe

TARGET = Target(customer="contoso", service="entra-id", check="app-signin", type="token")
TENANT = "contoso.partner.onmschina.cn"
CLIENT_ID = "3f1c0d7e-5a2b-4c8e-9d6f-0123456789ab"
SECRET = "Xq8~secret.VALUE_do-not-leak"
ISSUED_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.issued-token-body.signature"
GRAPH_SCOPE = "https://microsoftgraph.chinacloudapi.cn/.default"

Reply = Callable[[dict[str, str]], web.Response]


def entra_reply(form: dict[str, str]) -> web.Response:
    """What login.chinacloudapi.cn answers, shortened."""
    if form.get("client_secret") != SECRET:
        return web.json_response(
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
                "secret being sent in the request is the client secret value, not the client "
                f"secret ID, for a secret added to app '{CLIENT_ID}'.\r\nTrace ID: 0b1c",
                "error_codes": [7000215],
            },
            status=401,
        )
    return web.json_response(
        {"token_type": "Bearer", "expires_in": 3599, "access_token": ISSUED_TOKEN}
    )


class TokenEndpoint:
    """A tenant's token endpoint that records each request and answers with ``reply``."""

    def __init__(self) -> None:
        self.reply: Reply = entra_reply
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self.scheme = "http"
        self._runner: web.AppRunner | None = None

    @property
    def authority(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/{TENANT}/oauth2/v2.0/token"

    async def _handle(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.requests.append((request.path, form))
        return self.reply(form)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.scheme = "https" if ssl_context else "http"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    server = TokenEndpoint()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def options(endpoint: TokenEndpoint, **overrides: Any) -> Options:
    values: dict[str, Any] = {
        "authority": endpoint.authority,
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    return Options.model_validate({**values, **overrides})


async def test_sign_in(endpoint: TokenEndpoint, probe_ctx: ProbeContext) -> None:
    result = await probe(TARGET, options(endpoint), probe_ctx)
    assert result.success, result.reason
    assert result.facts == {"http_status_code": 200.0, "token_expires_in": 3599.0}
    assert set(result.phases) == {"response", "transfer"}
    assert endpoint.requests == [
        (
            f"/{TENANT}/oauth2/v2.0/token",
            {
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "scope": GRAPH_SCOPE,
            },
        )
    ]
    assert ISSUED_TOKEN not in json.dumps(result.to_json())


async def test_sign_in_with_token_url(endpoint: TokenEndpoint, probe_ctx: ProbeContext) -> None:
    # v1.0 endpoints send expires_in as a string of digits
    endpoint.reply = lambda form: web.json_response({"access_token": "t", "expires_in": "3600"})
    opts = Options(token_url=endpoint.token_url, client_id=CLIENT_ID, client_secret=SECRET)
    result = await probe(TARGET, opts, probe_ctx)
    assert result.success, result.reason
    assert result.facts["token_expires_in"] == 3600.0
    assert len(endpoint.requests) == 1


async def test_wrong_secret(
    endpoint: TokenEndpoint, probe_ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    check_type = checks.CheckType.from_module("token", checks.token)
    opts = options(endpoint)
    endpoint.reply = lambda form: entra_reply({**form, "client_secret": "expired"})
    result = await run_probe(check_type, TARGET, opts, probe_ctx)
    assert not result.success
    assert result.reason == "status 401: invalid_client (AADSTS7000215)"
    assert result.facts == {"http_status_code": 401.0}
    assert SECRET not in json.dumps(result.to_json())
    assert SECRET not in caplog.text
    assert SECRET not in repr(opts) and SECRET not in str(opts)


async def test_secret_echoed_by_the_server_is_redacted(
    endpoint: TokenEndpoint, probe_ctx: ProbeContext
) -> None:
    secret = "plainsecret42"
    endpoint.reply = lambda form: web.json_response({"error": form["client_secret"]}, status=400)
    result = await probe(TARGET, options(endpoint, client_secret=secret), probe_ctx)
    assert result.reason == "status 400: ***"


async def test_not_json(endpoint: TokenEndpoint, probe_ctx: ProbeContext) -> None:
    endpoint.reply = lambda form: web.Response(
        text="<html>Sign in</html>", content_type="text/html"
    )
    result = await probe(TARGET, options(endpoint), probe_ctx)
    assert not result.success
    assert result.reason == "status 200 but response is not JSON"
    assert result.facts == {"http_status_code": 200.0}


@pytest.mark.parametrize(
    "document",
    [{"token_type": "Bearer", "expires_in": 3599}, {"access_token": ""}, ["access_token"]],
)
async def test_no_access_token(
    endpoint: TokenEndpoint, probe_ctx: ProbeContext, document: Any
) -> None:
    endpoint.reply = lambda form: web.json_response(document)
    result = await probe(TARGET, options(endpoint), probe_ctx)
    assert not result.success
    expected = "no access_token in response"
    if isinstance(document, list):
        expected = "status 200 but response is not JSON"  # not a JSON object, anyway
    assert result.reason == expected


async def test_server_error(endpoint: TokenEndpoint, probe_ctx: ProbeContext) -> None:
    endpoint.reply = lambda form: web.Response(status=500, text="Internal Server Error")
    result = await probe(TARGET, options(endpoint), probe_ctx)
    assert not result.success
    assert result.reason == "status 500"
    assert result.facts == {"http_status_code": 500.0}


async def test_redirect_is_not_followed(endpoint: TokenEndpoint, probe_ctx: ProbeContext) -> None:
    # Following a 307 would post the client secret to wherever the Location points.
    elsewhere = f"http://127.0.0.1:{endpoint.port}/evil/oauth2/v2.0/token"
    endpoint.reply = lambda form: web.Response(status=307, headers={"Location": elsewhere})
    result = await probe(TARGET, options(endpoint), probe_ctx)
    assert result.reason == "status 307"
    assert [path for path, _ in endpoint.requests] == [f"/{TENANT}/oauth2/v2.0/token"]


async def test_connection_refused(free_port: int, probe_ctx: ProbeContext) -> None:
    opts = Options(
        token_url=f"http://127.0.0.1:{free_port}/{TENANT}/oauth2/v2.0/token",
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    result = await probe(TARGET, opts, probe_ctx)
    assert not result.success
    assert result.reason == "connection refused"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    authority = trustme.CA()
    ca_file = tmp_path_factory.mktemp("token-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return authority, str(ca_file)


async def test_https_endpoint(ca: tuple[trustme.CA, str], probe_ctx: ProbeContext) -> None:
    authority, ca_file = ca
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    server = TokenEndpoint()
    await server.start(server_context)
    try:
        trusted = await probe(TARGET, options(server, ca_file=ca_file), probe_ctx)
        untrusted = await probe(TARGET, options(server), probe_ctx)
    finally:
        await server.stop()
    assert trusted.success, trusted.reason
    assert untrusted.reason.startswith("certificate verification failed")
    assert len(server.requests) == 1  # the secret was not sent to the untrusted server


def test_token_url_built_from_authority_and_tenant() -> None:
    opts = Options(tenant=TENANT, client_id=CLIENT_ID, client_secret=SECRET)
    assert opts.endpoint == f"https://login.chinacloudapi.cn/{TENANT}/oauth2/v2.0/token"
    assert opts.scope == GRAPH_SCOPE
    assert opts.tls_verify


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "either token_url or tenant is required"),
        (
            {"tenant": TENANT, "token_url": f"https://login.chinacloudapi.cn/{TENANT}/token"},
            "give it or authority + tenant, not both",
        ),
        ({"tenant": "contoso/../common"}, "String should match pattern"),
        ({"token_url": "login.chinacloudapi.cn/x"}, "String should match pattern"),
        ({"tenant": TENANT, "client_secret": ""}, "at least 1 item"),
        ({"tenant": TENANT, "password": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_options(fields: dict[str, Any], message: str) -> None:
    values = {"client_id": CLIENT_ID, "client_secret": SECRET, **fields}
    with pytest.raises(ValidationError, match=re.escape(message)) as raised:
        Options.model_validate(values)
    assert SECRET not in str(raised.value)
