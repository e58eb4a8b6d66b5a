"""The ``tls`` check against real TLS servers on 127.0.0.1 with trustme certificates."""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pydantic
import pytest
import trustme

from checks import CheckType, tls
from monitor.probe import ProbeContext, ProbeResult, Target
from monitor.runner import run_probe

TARGET = Target(customer="contoso", service="azure-portal", check="cert", type="tls")
NAME = "portal.example.cn"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def issue(
    ca: trustme.CA, *names: str, days: float = 90, valid_from: float = -30
) -> trustme.LeafCert:
    now = datetime.now(UTC)
    return ca.issue_cert(
        *(names or (NAME,)),
        not_before=now + timedelta(days=valid_from),
        not_after=now + timedelta(days=days),
    )


@contextlib.asynccontextmanager
async def tls_server(cert: trustme.LeafCert) -> AsyncIterator[int]:
    """A TLS server presenting ``cert`` (and its chain) that waits for the client to hang up."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def days_left(result: ProbeResult) -> float:
    """Whole days to the earliest expiry, as a dashboard computes them from the metric."""
    return float(math.trunc((result.facts["ssl_earliest_cert_expiry"] - time.time()) / 86400))


async def run(cert: trustme.LeafCert, ctx: ProbeContext, **options: object) -> ProbeResult:
    async with tls_server(cert) as port:
        opts = tls.Options.model_validate(
            {"host": "127.0.0.1", "port": port, "server_name": NAME, **options}
        )
        return await tls.probe(TARGET, opts, ctx)


async def test_valid_certificate(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    cert = issue(ca, days=90)
    result = await run(cert, probe_ctx, ca_file=ca_file)
    assert result.success and not result.degraded, result.reason
    assert result.reason == ""
    assert days_left(result) in (89.0, 90.0)
    expected = (datetime.now(UTC) + timedelta(days=90)).timestamp()
    assert abs(result.facts["ssl_earliest_cert_expiry"] - expected) < 86400
    # The verified chain (leaf + trustme root) was read, not just the leaf.
    assert "ssl_last_chain_expiry_timestamp_seconds" in result.facts
    assert set(result.phases) == {"connect", "tls"}
    assert "ssl_days_left" not in result.facts  # not in base units: promtool refuses it
    assert result.facts["ip_protocol"] == 4
    assert result.info["tls_version_info"] == {"version": "TLS 1.3"}
    assert result.info["ssl_last_chain_info"]["subjectalternative"] == NAME


async def test_chain_with_intermediate(
    ca: trustme.CA, probe_ctx: ProbeContext, tmp_path: Path
) -> None:
    intermediate = ca.create_child_ca()
    cert = issue(intermediate, days=60)
    ca.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    result = await run(cert, probe_ctx, ca_file=str(tmp_path / "root.pem"))
    assert result.success and not result.degraded, result.reason
    assert days_left(result) in (59.0, 60.0)


async def test_expiring_within_warn_days_is_degraded(
    ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext
) -> None:
    cert = issue(ca, days=10.05)
    result = await run(cert, probe_ctx, ca_file=ca_file, warn_days=21)
    assert result.success and result.degraded
    assert result.reason == "certificate expires in 10 days"
    assert days_left(result) == 10.0


async def test_expiring_within_critical_days_fails(
    ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext
) -> None:
    cert = issue(ca, days=3.05)
    result = await run(cert, probe_ctx, ca_file=ca_file, critical_days=7)
    assert not result.success
    assert result.reason == "certificate expires in 3 days"
    assert days_left(result) == 3.0


async def test_expiring_within_hours(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    cert = issue(ca, days=5.5 / 24)
    result = await run(cert, probe_ctx, ca_file=ca_file)
    assert not result.success
    assert result.reason == "certificate expires in 5 hours"


async def test_expired_certificate(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    cert = issue(ca, days=-5)
    result = await run(cert, probe_ctx, ca_file=ca_file)
    assert not result.success
    assert result.reason == "certificate expired 5 days ago"
    # The dates are read even though verification failed.
    assert days_left(result) == -5.0
    assert result.facts["ssl_earliest_cert_expiry"] < datetime.now(UTC).timestamp()


async def test_expired_certificate_without_verification(
    ca: trustme.CA, probe_ctx: ProbeContext
) -> None:
    cert = issue(ca, days=-1.5)
    result = await run(cert, probe_ctx, verify_chain=False)
    assert not result.success
    assert result.reason == "certificate expired 1 day ago"


async def test_wrong_hostname(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    cert = issue(ca, "other.example.cn")
    result = await run(cert, probe_ctx, ca_file=ca_file)
    assert not result.success
    assert result.reason == f"certificate does not match {NAME}"
    assert days_left(result) in (89.0, 90.0)


async def test_wrong_hostname_allowed(
    ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext
) -> None:
    cert = issue(ca, "other.example.cn")
    result = await run(cert, probe_ctx, ca_file=ca_file, verify_hostname=False)
    assert result.success, result.reason


async def test_wrong_hostname_without_chain_verification(
    ca: trustme.CA, probe_ctx: ProbeContext
) -> None:
    cert = issue(ca, "other.example.cn")
    result = await run(cert, probe_ctx, verify_chain=False)
    assert not result.success
    assert result.reason == f"certificate does not match {NAME}"


async def test_untrusted_ca(ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext) -> None:
    cert = issue(trustme.CA())
    result = await run(cert, probe_ctx, ca_file=ca_file)
    assert not result.success
    assert result.reason.startswith("certificate verification failed: ")
    assert "issuer" in result.reason
    assert days_left(result) in (89.0, 90.0)


async def test_untrusted_ca_without_chain_verification(probe_ctx: ProbeContext) -> None:
    cert = issue(trustme.CA())
    result = await run(cert, probe_ctx, verify_chain=False)
    assert result.success and not result.degraded, result.reason
    assert "ssl_last_chain_expiry_timestamp_seconds" not in result.facts


async def test_refused_port(free_port: int, probe_ctx: ProbeContext) -> None:
    opts = tls.Options(host="127.0.0.1", port=free_port)
    result = await tls.probe(TARGET, opts, probe_ctx)
    assert not result.success
    assert result.reason == "connection refused"


async def test_missing_ca_file(probe_ctx: ProbeContext, tmp_path: Path) -> None:
    opts = tls.Options(host="127.0.0.1", ca_file=str(tmp_path / "nope.pem"))
    result = await tls.probe(TARGET, opts, probe_ctx)
    assert not result.success
    assert result.reason.startswith(f"cannot load ca_file {tmp_path / 'nope.pem'}: ")


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(pydantic.ValidationError, match="critical_days"):
        tls.Options(host="portal.azure.cn", warn_days=5, critical_days=7)
    assert tls.Options(host="portal.azure.cn").port == 443


@pytest.mark.parametrize(
    ("san", "server_name", "matches"),
    [
        ("*.chinacloudapp.cn", "myapp.chinacloudapp.cn", True),
        ("*.chinacloudapp.cn", "MyApp.ChinaCloudApp.cn.", True),
        ("*.chinacloudapp.cn", "a.myapp.chinacloudapp.cn", False),
        ("*.chinacloudapp.cn", "chinacloudapp.cn", False),
        ("portal.azure.cn", "portal.azure.cn", True),
        ("portal.azure.cn", "portal.azure.com", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("xn--fiqs8s.example.cn", "中国.example.cn", True),
    ],
)
def test_name_matching(ca: trustme.CA, san: str, server_name: str, matches: bool) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ca.issue_cert(san).cert_chain_pems[0].bytes())
    assert tls._names(cert, server_name) is matches


async def test_plain_text_port(probe_ctx: ProbeContext) -> None:
    async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(http_server, "127.0.0.1", 0)
    try:
        port = int(server.sockets[0].getsockname()[1])
        result = await tls.probe(TARGET, tls.Options(host="127.0.0.1", port=port), probe_ctx)
    finally:
        server.close()
        await server.wait_closed()
    assert not result.success
    assert result.reason.startswith("TLS error: ")


async def test_server_ignoring_close_notify(
    ca: trustme.CA, ca_file: str, probe_ctx: ProbeContext
) -> None:
    """Hanging up must not wait for a close_notify the server never sends."""
    release = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        cast(asyncio.Transport, writer.transport).pause_reading()
        await release.wait()
        writer.transport.abort()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issue(ca).configure_cert(context)
    server = await asyncio.start_server(stalled, "127.0.0.1", 0, ssl=context)
    ctx = ProbeContext(http=probe_ctx.http, timeout=2.0)
    check_type = CheckType("tls", tls.Options, tls.probe, tls.METRIC_HELP)
    try:
        port = int(server.sockets[0].getsockname()[1])
        opts = tls.Options(host="127.0.0.1", port=port, server_name=NAME, ca_file=ca_file)
        result = await run_probe(check_type, TARGET, opts, ctx)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert result.success, result.reason
