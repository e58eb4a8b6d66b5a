"""The ``tcp`` check against real servers on 127.0.0.1 (plain and TLS with a trustme CA)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pydantic
import pytest
import trustme

from checks import CheckType, tcp
from monitor.probe import ProbeContext, ProbeResult, Target
from monitor.runner import run_probe

TARGET = Target(customer="contoso", service="azure-vm", check="rdp", type="tcp")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@contextlib.asynccontextmanager
async def serve(handler: Handler, context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


async def redis_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers PING with +PONG and anything else with an error."""
    line = await reader.readline()
    writer.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR unknown command\r\n")
    await writer.drain()


async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write("220 mail.example.cn ESMTP 就绪\r\n".encode())
    await writer.drain()
    await reader.read()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass


async def probe(port: int, ctx: ProbeContext, **options: object) -> ProbeResult:
    opts = tcp.Options.model_validate({"host": "127.0.0.1", "port": port, **options})
    return await tcp.probe(TARGET, opts, ctx)


async def test_connect(probe_ctx: ProbeContext) -> None:
    async with serve(until_closed) as port:
        result = await probe(port, probe_ctx)
    assert result.success, result.reason
    assert result.facts == {"tcp_tls": 0.0, "ip_protocol": 4.0, "ip_addr_hash": 144_953_630.0}
    assert result.info == {}
    assert set(result.phases) == {"connect"}


async def test_refused(free_port: int, probe_ctx: ProbeContext) -> None:
    result = await probe(free_port, probe_ctx)
    assert not result.success
    assert result.reason == "connection refused"


async def test_send_expect_match(probe_ctx: ProbeContext) -> None:
    async with serve(redis_like) as port:
        result = await probe(port, probe_ctx, send="PING\\r\\n", expect=r"^\+PONG")
    assert result.success, result.reason
    assert set(result.phases) == {"connect", "reply"}


async def test_send_expect_mismatch(probe_ctx: ProbeContext) -> None:
    async with serve(redis_like) as port:
        result = await probe(port, probe_ctx, send="PONG\\r\\n", expect=r"^\+PONG")
    assert not result.success
    assert result.reason == r"reply '-ERR unknown command' does not match '^\\+PONG'"
    assert "reply" in result.phases


async def test_expect_banner_utf8(probe_ctx: ProbeContext) -> None:
    async with serve(banner) as port:
        result = await probe(port, probe_ctx, expect="^220 .*就绪")
    assert result.success, result.reason


async def test_no_reply(probe_ctx: ProbeContext) -> None:
    async with serve(hang_up) as port:
        result = await probe(port, probe_ctx, expect="^220")
    assert not result.success
    assert result.reason == "reply 'nothing' does not match '^220'"


async def test_tls(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    async with serve(redis_like, server_context(ca)) as port:
        result = await probe(
            port, probe_ctx, tls=True, ca_file=ca_file, send="PING\\r\\n", expect=r"^\+PONG"
        )
    assert result.success, result.reason
    assert result.facts["tcp_tls"] == 1.0
    assert result.facts["ssl_last_chain_expiry_timestamp_seconds"] > time.time()
    assert result.info["tls_version_info"] == {"version": "TLS 1.3"}
    assert "fingerprint_sha256" in result.info["ssl_last_chain_info"]


async def test_tls_untrusted(ca: trustme.CA, probe_ctx: ProbeContext) -> None:
    async with serve(until_closed, server_context(trustme.CA())) as port:
        result = await probe(port, probe_ctx, tls=True, ca_file=None)
        assert not result.success
        assert result.reason.startswith("certificate verification failed: ")
        result = await probe(port, probe_ctx, tls=True, tls_verify=False)
    assert result.success, result.reason


async def test_tls_to_plain_port(probe_ctx: ProbeContext, ca_file: str) -> None:
    async with serve(banner) as port:
        result = await probe(port, probe_ctx, tls=True, ca_file=ca_file)
    assert not result.success
    assert result.reason.startswith("TLS error: ")


async def test_tls_server_ignoring_close_notify(
    ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext
) -> None:
    """A server that never answers the TLS close must not turn a good probe into a timeout."""
    release = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK ready\r\n")
        cast(asyncio.Transport, writer.transport).pause_reading()
        await release.wait()
        writer.transport.abort()

    ctx = ProbeContext(http=probe_ctx.http, timeout=2.0)
    check_type = CheckType("tcp", tcp.Options, tcp.probe, tcp.METRIC_HELP)
    async with serve(stalled, server_context(ca)) as port:
        opts = tcp.Options(host="127.0.0.1", port=port, tls=True, ca_file=ca_file, expect=r"^\+OK")
        result = await run_probe(check_type, TARGET, opts, ctx)
        release.set()
    assert result.success, result.reason


async def test_missing_ca_file(probe_ctx: ProbeContext, tmp_path: Path) -> None:
    result = await probe(3389, probe_ctx, tls=True, ca_file=str(tmp_path / "nope.pem"))
    assert not result.success
    assert result.reason.startswith(f"cannot load ca_file {tmp_path / 'nope.pem'}: ")


@pytest.mark.parametrize(
    "options",
    [
        {"port": 0},
        {"port": 65536},
        {"expect": "("},
        {"send": "\\x4"},
        {"read_bytes": 0},
        {"tls_verfy": False},
    ],
)
def test_invalid_options(options: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        tcp.Options.model_validate({"host": "10.0.0.4", "port": 3389, **options})
