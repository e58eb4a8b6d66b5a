"""The smtp check against a real aiosmtpd server and small scripted asyncio servers."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from pydantic import ValidationError

import checks
import checks.smtp
from checks.smtp import Options, probe
from monitor.probe import ProbeContext, Target
from monitor.runner import run_probe
from tests.conftest import start_smtp_server, stop_smtp_server

TARGET = Target(customer="contoso", service="exchange-online", check="mx", type="smtp")
MX_NAME = "contoso-com.mail.protection.partner.outlook.cn"


@dataclass(frozen=True)
class Certs:
    ca_file: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    return Certs(str(ca_file), server_context)


@pytest.fixture
def start_smtpd(free_port: int) -> Iterator[Callable[..., int]]:
    """Start aiosmtpd (in its own thread) on a free port; returns the port."""
    controllers: list[Controller] = []

    def start(**smtp_parameters: Any) -> int:
        controllers.append(
            start_smtp_server(Sink(), free_port, server_hostname=MX_NAME, **smtp_parameters)
        )
        return free_port

    yield start
    for controller in controllers:
        stop_smtp_server(controller)


@dataclass
class Scripted:
    port: int
    commands: list[str] = field(default_factory=list)


@asynccontextmanager
async def scripted_server(greeting: bytes | None) -> AsyncIterator[Scripted]:
    """A one-trick SMTP server: sends ``greeting`` and answers QUIT with 221, anything else
    with 502; ``b""`` hangs up at once, ``None`` stays silent until the client gives up."""
    scripted = Scripted(port=0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if greeting is None:
                await reader.read()
                return
            if not greeting:
                return
            writer.write(greeting)
            await writer.drain()
            for _ in range(10):
                line = await reader.readline()
                if not line:
                    return
                scripted.commands.append(line.decode().strip())
                writer.write(b"221 2.0.0 Bye\r\n" if line.startswith(b"QUIT") else b"502 no\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        server.close()
        await server.wait_closed()


async def test_plain_session(start_smtpd: Callable[..., int], probe_ctx: ProbeContext) -> None:
    port = start_smtpd()
    result = await probe(TARGET, Options(host="127.0.0.1", port=port), probe_ctx)
    assert result.success, result.reason
    assert result.facts == {"smtp_status_code": 220.0, "smtp_starttls": 0.0}
    assert set(result.phases) == {"connect", "banner", "ehlo"}


async def test_expected_banner_matches(
    start_smtpd: Callable[..., int], probe_ctx: ProbeContext
) -> None:
    port = start_smtpd()
    opts = Options(host="127.0.0.1", port=port, expect_banner=r"^220 \S+\.partner\.outlook\.cn ")
    result = await probe(TARGET, opts, probe_ctx)
    assert result.success, result.reason


async def test_starttls(
    start_smtpd: Callable[..., int], certs: Certs, probe_ctx: ProbeContext
) -> None:
    port = start_smtpd(tls_context=certs.server_context)
    opts = Options(host="127.0.0.1", port=port, starttls=True, ca_file=certs.ca_file)
    result = await probe(TARGET, opts, probe_ctx)
    assert result.success, result.reason
    assert result.facts == {"smtp_status_code": 220.0, "smtp_starttls": 1.0}
    assert set(result.phases) == {"connect", "banner", "ehlo", "starttls"}


async def test_starttls_with_untrusted_certificate(
    start_smtpd: Callable[..., int], certs: Certs, probe_ctx: ProbeContext
) -> None:
    port = start_smtpd(tls_context=certs.server_context)
    result = await probe(TARGET, Options(host="127.0.0.1", port=port, starttls=True), probe_ctx)
    assert not result.success
    assert result.reason.startswith("STARTTLS failed: certificate verification failed")


async def test_starttls_without_verification(
    start_smtpd: Callable[..., int], certs: Certs, probe_ctx: ProbeContext
) -> None:
    port = start_smtpd(tls_context=certs.server_context)
    opts = Options(host="127.0.0.1", port=port, starttls=True, tls_verify=False)
    result = await probe(TARGET, opts, probe_ctx)
    assert result.success, result.reason


async def test_implicit_tls(
    start_smtpd: Callable[..., int], certs: Certs, probe_ctx: ProbeContext
) -> None:
    port = start_smtpd(ssl_context=certs.server_context)
    opts = Options(host="127.0.0.1", port=port, tls=True, ca_file=certs.ca_file)
    result = await probe(TARGET, opts, probe_ctx)
    assert result.success, result.reason
    assert set(result.phases) == {"connect", "tls", "banner", "ehlo"}


async def test_connection_refused(free_port: int, probe_ctx: ProbeContext) -> None:
    result = await probe(TARGET, Options(host="127.0.0.1", port=free_port), probe_ctx)
    assert not result.success
    assert result.reason == "connection refused"


async def test_starttls_required_but_not_offered(
    start_smtpd: Callable[..., int], probe_ctx: ProbeContext
) -> None:
    port = start_smtpd()
    result = await probe(TARGET, Options(host="127.0.0.1", port=port, starttls=True), probe_ctx)
    assert not result.success
    assert result.reason == "STARTTLS not offered"
    assert result.facts["smtp_starttls"] == 0.0


async def test_banner_mismatch(start_smtpd: Callable[..., int], probe_ctx: ProbeContext) -> None:
    port = start_smtpd()
    opts = Options(host="127.0.0.1", port=port, expect_banner="Microsoft ESMTP MAIL Service")
    result = await probe(TARGET, opts, probe_ctx)
    assert not result.success
    assert result.reason.startswith(f"banner '220 {MX_NAME}")
    assert result.reason.endswith("does not match 'Microsoft ESMTP MAIL Service'")


async def test_rejecting_banner(probe_ctx: ProbeContext) -> None:
    greeting = b"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked\r\n"
    async with scripted_server(greeting) as server:
        result = await probe(TARGET, Options(host="127.0.0.1", port=server.port), probe_ctx)
    assert not result.success
    assert result.reason == "banner 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked"
    assert result.facts == {"smtp_status_code": 554.0}
    assert server.commands == ["QUIT"]  # RFC 5321 §3.1: answer a 554 greeting with QUIT


async def test_ehlo_rejected(probe_ctx: ProbeContext) -> None:
    async with scripted_server(b"220 mx ESMTP\r\n") as server:
        result = await probe(TARGET, Options(host="127.0.0.1", port=server.port), probe_ctx)
    assert not result.success
    assert result.reason == "EHLO rejected: 502 no"
    assert server.commands == ["EHLO csp-monitor.invalid", "QUIT"]


async def test_not_an_smtp_server(probe_ctx: ProbeContext) -> None:
    async with scripted_server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as server:
        result = await probe(TARGET, Options(host="127.0.0.1", port=server.port), probe_ctx)
    assert not result.success
    assert result.reason == "invalid SMTP reply to banner: 'HTTP/1.1 400 Bad Request'"


async def test_connection_closed_before_banner(probe_ctx: ProbeContext) -> None:
    async with scripted_server(b"") as server:
        result = await probe(TARGET, Options(host="127.0.0.1", port=server.port), probe_ctx)
    assert not result.success
    assert result.reason == "connection closed while waiting for banner"


async def test_server_that_never_answers_times_out(probe_ctx: ProbeContext) -> None:
    check_type = checks.CheckType.from_module("smtp", checks.smtp)
    ctx = ProbeContext(http=probe_ctx.http, timeout=0.3)
    async with scripted_server(None) as server:
        opts = Options(host="127.0.0.1", port=server.port)
        result = await run_probe(check_type, TARGET, opts, ctx)
    assert not result.success
    assert not result.plugin_error
    assert result.reason == "timeout after 0.3s"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tls": True, "starttls": True}, "tls (implicit, port 465) and starttls"),
        ({"expect_banner": "220 ("}, "invalid regular expression"),
        ({"helo_name": "evil\r\nRCPT TO:<x@y>"}, "String should match pattern"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"sender": "a@b"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Options.model_validate({"host": MX_NAME, **options})


def test_defaults() -> None:
    opts = Options(host=MX_NAME)
    assert (opts.port, opts.starttls, opts.tls, opts.tls_verify) == (25, False, False, True)
    assert Path(opts.helo_name).suffix == ".invalid"
