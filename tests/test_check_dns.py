"""The ``dns`` check against a tiny authoritative DNS server on 127.0.0.1 (UDP and TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pydantic
import pytest

from checks import CheckType
from checks import dns as dns_check
from monitor.probe import ProbeContext, ProbeResult, Target
from monitor.runner import run_probe

TARGET = Target(customer="contoso", service="exchange-online", check="mx", type="dns")

ZONE: dict[str, dict[str, list[str]]] = {
    "portal.example.cn.": {"A": ["42.159.0.1", "42.159.0.2"], "AAAA": ["2402:4e00::1"]},
    "example.cn.": {
        "MX": ["10 contoso-cn.mail.protection.partner.outlook.cn.", "20 MX2.Example.cn."],
        "TXT": ['"v=spf1 include:spf.protection.partner.outlook.cn" " -all"'],
        "NS": ["ns1.example.cn.", "ns2.example.cn."],
        "SOA": ["ns1.example.cn. hostmaster.example.cn. 2024010101 3600 600 86400 300"],
    },
    "www.example.cn.": {"CNAME": ["portal.example.cn."]},
    "empty.example.cn.": {},
}
SERVFAIL_NAME = "broken.example.cn."


def answer(wire: bytes) -> bytes:
    """Answer a query from ZONE: records, NOERROR without records, NXDOMAIN or SERVFAIL."""
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text().lower()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    if name == SERVFAIL_NAME:
        response.set_rcode(dns.rcode.SERVFAIL)
    elif name not in ZONE:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif rdtype in ZONE[name]:
        rrset = dns.rrset.from_text(question.name, 300, "IN", rdtype, *ZONE[name][rdtype])
        response.answer.append(rrset)
    return response.to_wire()


class UdpResponder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typed as DatagramTransport, which the selector loop's class does not subclass
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.transport.sendto(answer(data), addr)


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """DNS over TCP: each message is prefixed with its 2-byte length."""
    with contextlib.suppress(asyncio.IncompleteReadError, OSError):
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = answer(await reader.readexactly(length))
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    writer.close()


@pytest.fixture
async def dns_server() -> AsyncIterator[str]:
    """'127.0.0.1:port' of a server answering from ZONE on UDP and TCP (same port)."""
    loop = asyncio.get_running_loop()
    for _ in range(10):  # the UDP port's TCP twin is almost always free; retry if not
        transport, _ = await loop.create_datagram_endpoint(
            UdpResponder, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(serve_tcp, "127.0.0.1", port)
        except OSError:
            transport.close()
            continue
        break
    else:
        pytest.fail("no port free for both UDP and TCP")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def silent_resolver() -> Iterator[str]:
    """A UDP socket that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def run(ctx: ProbeContext, **options: object) -> ProbeResult:
    return await dns_check.probe(TARGET, dns_check.Options.model_validate(options), ctx)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_records(dns_server: str, probe_ctx: ProbeContext, transport: str) -> None:
    result = await run(
        probe_ctx,
        query="portal.example.cn",
        resolver=dns_server,
        transport=transport,
        expect=["42.159.0.2"],
        min_answers=2,
    )
    assert result.success, result.reason
    assert result.facts["dns_answer_rrs"] == 2.0
    assert result.facts["dns_query_succeeded"] == 1.0
    assert result.phases["request"] > 0  # the query's time, blackbox's phase name
    assert set(result.facts) == set(dns_check.METRIC_HELP)


async def test_expect_mismatch(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(
        probe_ctx, query="portal.example.cn", resolver=dns_server, expect=["42.159.0.1", "1.2.3.4"]
    )
    assert not result.success
    assert result.reason == "answer lacks '1.2.3.4' (got 42.159.0.1, 42.159.0.2)"
    assert result.facts["dns_answer_rrs"] == 2.0


async def test_too_few_answers(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(probe_ctx, query="portal.example.cn", resolver=dns_server, min_answers=3)
    assert not result.success
    assert result.reason == "2 A records for portal.example.cn, expected at least 3"


async def test_aaaa_compared_in_canonical_form(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(
        probe_ctx,
        query="portal.example.cn",
        record_type="aaaa",
        resolver=dns_server,
        expect=["2402:4E00:0:0::1"],
    )
    assert result.success, result.reason


async def test_mx_rendering(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(
        probe_ctx,
        query="example.cn",
        record_type="MX",
        resolver=dns_server,
        expect=["10 Contoso-CN.mail.protection.partner.outlook.cn.", "20 mx2.example.cn"],
    )
    assert result.success, result.reason
    result = await run(
        probe_ctx,
        query="example.cn",
        record_type="MX",
        resolver=dns_server,
        expect=["5 mx.example.cn"],
    )
    assert result.reason == (
        "answer lacks '5 mx.example.cn' (got 10 contoso-cn.mail.protection"
        ".partner.outlook.cn, 20 mx2.example.cn)"
    )


async def test_txt_ns_soa_cname(dns_server: str, probe_ctx: ProbeContext) -> None:
    cases = {
        ("example.cn", "TXT"): "v=spf1 include:spf.protection.partner.outlook.cn -all",
        ("example.cn", "NS"): "ns2.example.cn",
        ("example.cn", "SOA"): "ns1.example.cn hostmaster.example.cn 2024010101 3600 600 86400 300",
        ("www.example.cn", "CNAME"): "portal.example.cn.",
    }
    for (name, record_type), expected in cases.items():
        result = await run(
            probe_ctx, query=name, record_type=record_type, resolver=dns_server, expect=[expected]
        )
        assert result.success, (record_type, result.reason)


async def test_expect_regex_must_match_every_answer(
    dns_server: str, probe_ctx: ProbeContext
) -> None:
    result = await run(
        probe_ctx, query="example.cn", record_type="MX", resolver=dns_server, expect_regex=r"\.cn$"
    )
    assert result.success, result.reason
    result = await run(
        probe_ctx,
        query="example.cn",
        record_type="MX",
        resolver=dns_server,
        expect_regex=r"outlook\.cn$",
    )
    assert not result.success
    assert result.reason == r"answer '20 mx2.example.cn' does not match 'outlook\\.cn$'"


async def test_nxdomain(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(probe_ctx, query="missing.example.cn", resolver=dns_server)
    assert not result.success
    assert result.reason == "NXDOMAIN for missing.example.cn"
    assert "request" in result.phases
    assert result.facts["dns_query_succeeded"] == 1.0  # the resolver did answer


async def test_no_answer(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(probe_ctx, query="empty.example.cn", resolver=dns_server)
    assert not result.success
    assert result.reason == "no A records for empty.example.cn"
    assert result.facts["dns_answer_rrs"] == 0.0
    # NOERROR without records is acceptable when asked for.
    result = await run(probe_ctx, query="empty.example.cn", resolver=dns_server, min_answers=0)
    assert result.success, result.reason


async def test_servfail(dns_server: str, probe_ctx: ProbeContext) -> None:
    result = await run(probe_ctx, query="broken.example.cn", resolver=dns_server)
    assert not result.success
    assert result.reason == f"nameserver {dns_server} answered SERVFAIL"


async def test_tcp_refused(free_port: int, probe_ctx: ProbeContext) -> None:
    result = await run(
        probe_ctx, query="portal.example.cn", resolver=f"127.0.0.1:{free_port}", transport="tcp"
    )
    assert not result.success
    assert result.reason == f"nameserver 127.0.0.1:{free_port}: connection refused"


async def test_timeout(silent_resolver: str, probe_ctx: ProbeContext) -> None:
    ctx = ProbeContext(http=probe_ctx.http, timeout=0.3)
    result = await run(ctx, query="portal.example.cn", resolver=silent_resolver)
    assert not result.success
    assert result.reason == "timeout after 0.3s"
    assert result.facts["dns_query_succeeded"] == 0.0


async def test_timeout_under_runner(silent_resolver: str, probe_ctx: ProbeContext) -> None:
    """Whether dnspython's lifetime or the runner's deadline fires first, the reason is one."""
    ctx = ProbeContext(http=probe_ctx.http, timeout=0.3)
    check_type = CheckType("dns", dns_check.Options, dns_check.probe, dns_check.METRIC_HELP)
    opts = dns_check.Options(query="portal.example.cn", resolver=silent_resolver)
    result = await run_probe(check_type, TARGET, opts, ctx)
    assert not result.success and not result.plugin_error
    assert result.reason == "timeout after 0.3s"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.53", ("10.0.0.53", 53)),
        ("10.0.0.53:5353", ("10.0.0.53", 5353)),
        ("2402:4e00::53", ("2402:4e00::53", 53)),
        ("[2402:4e00::53]", ("2402:4e00::53", 53)),
        ("[2402:4e00::53]:5353", ("2402:4e00::53", 5353)),
    ],
)
def test_resolver_address(text: str, address: tuple[str, int]) -> None:
    assert dns_check.resolver_address(text) == address


@pytest.mark.parametrize(
    "options",
    [
        {"resolver": "dns.example.cn"},
        {"resolver": "10.0.0.53:0"},
        {"resolver": "10.0.0.53:dns"},
        {"resolver": "[2402:4e00::53]x"},
        {"record_type": "PTR"},
        {"transport": "doh"},
        {"expect_regex": "("},
        {"min_answers": -1},
        {"nameserver": "10.0.0.53"},
    ],
)
def test_invalid_options(options: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        dns_check.Options.model_validate({"name": "portal.azure.cn", **options})
