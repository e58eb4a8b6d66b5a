"""``dns``: resolve a name through a chosen resolver and check the answer.

Answers the questions a reseller's NOC asks about DNS: does ``portal.azure.cn``
still resolve from the customer's resolver, does the tenant's MX still point at
``*.mail.protection.partner.outlook.cn``, is the SPF TXT record still there.

Answers are compared in a rendered form: names without the trailing dot and
lower-cased, MX as ``"10 mx.example.cn"``, TXT as its strings joined without
quotes, addresses in canonical form. ``expect`` lists answers that must all be
present (case-insensitive); ``expect_regex`` must match *every* answer, so an
unexpected extra record (a hijacked or stale A record) fails the check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.resolver
import dns.rrset
from dns.rdtypes.txtbase import TXTBase
from pydantic import Field, field_validator

from monitor.local_failures import note_local, note_network
from monitor.probe import (
    CheckOptions,
    ProbeContext,
    ProbeResult,
    Regex,
    Target,
    describe_error,
    failure,
)

METRIC_HELP = {
    "dns_lookup_time_seconds": "Time spent resolving the target's own name: 0, the resolver "
    'is an address (the query\'s time is probe_dns_duration_seconds{phase="request"})',
    "dns_query_succeeded": "1 if the resolver answered the query (any response code)",
    "dns_answer_rrs": "Number of records in the answer section",
    "dns_authority_rrs": "Number of records in the authority section",
    "dns_additional_rrs": "Number of records in the additional section",
}

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA"]
_SHOWN_ANSWERS = 5


class Options(CheckOptions):
    query: str = Field(description="Name to resolve, e.g. portal.azure.cn")
    record_type: RecordType = Field("A", description="Record type to ask for")
    resolver: str | None = Field(
        None,
        description="Resolver to ask: 'ip', 'ip:port' or '[ipv6]:port' "
        "(default: the system resolver from /etc/resolv.conf)",
    )
    transport: Literal["udp", "tcp"] = Field("udp", description="Query over UDP or TCP")
    expect: list[str] = Field(
        default_factory=list,
        description="Answers that must all be present, e.g. '10 mx.example.cn' (case-insensitive)",
    )
    expect_regex: Regex | None = Field(
        None, description="Regular expression every answer must match (re.search)"
    )
    min_answers: int = Field(1, ge=0, description="Fewest records of record_type accepted")

    @field_validator("record_type", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("resolver")
    @classmethod
    def _valid_resolver(cls, value: str | None) -> str | None:
        if value is not None:
            resolver_address(value)
        return value


def resolver_address(text: str) -> tuple[str, int]:
    """``"ip"``, ``"ip:port"`` or ``"[ipv6]:port"`` as (ip, port); ValueError when malformed."""
    host, port_text = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            host = ""
        port_text = rest[1:] or port_text
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"resolver must be 'ip', 'ip:port' or '[ipv6]:port', not {text!r}")
    return host, port


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    try:
        resolver = dns.asyncresolver.Resolver(configure=opts.resolver is None)
    except dns.exception.DNSException as exc:  # no or unreadable /etc/resolv.conf
        return failure(f"no system resolver: {exc}", started, ctx)
    if opts.resolver is not None:
        address, resolver.port = resolver_address(opts.resolver)
        resolver.nameservers = [address]
    resolver.lifetime = ctx.timeout

    asked = ctx.monotonic()
    try:
        answer = await resolver.resolve(
            opts.query,
            opts.record_type,
            tcp=opts.transport == "tcp",
            raise_on_no_answer=False,
            search=False,
        )
    except dns.resolver.NXDOMAIN:
        reason = f"NXDOMAIN for {opts.query}"
    except dns.exception.Timeout:
        reason = f"timeout after {ctx.timeout:g}s"
        if opts.resolver is None:  # the system resolver is ours: its silence is our failure
            note_local("the system resolver did not answer")
    except dns.resolver.NoNameservers as exc:
        reason = _nameserver_error(exc)
        if opts.resolver is None and _unreachable(exc):
            note_local("the system resolver cannot be reached")
    except dns.exception.DNSException as exc:
        reason = f"DNS error: {exc}"
    except OSError as exc:
        reason = describe_error(exc)
    else:
        reason = ""
    query_time = ctx.monotonic() - asked
    if reason:
        note_network()
        result = failure(reason, started, ctx, request=query_time)
        # an NXDOMAIN is an answer: the query itself went through, as blackbox counts it
        answered = reason.startswith("NXDOMAIN")
        result.facts = {"dns_lookup_time_seconds": 0.0, "dns_query_succeeded": float(answered)}
        return result

    response = answer.response
    # Sorted, so that the same answer always gives the same reason.
    records = sorted((_render(rdata) for rdata in answer.rrset or ()), key=_natural_order)
    facts = {
        # blackbox's meaning: the time to resolve the target (the resolver), here an
        # address; the query's own time is the "request" phase, as in blackbox
        "dns_lookup_time_seconds": 0.0,
        "dns_query_succeeded": 1.0,
        "dns_answer_rrs": float(_count(response.answer)),
        "dns_authority_rrs": float(_count(response.authority)),
        "dns_additional_rrs": float(_count(response.additional)),
    }
    reason = _check_answer(opts, records)
    return ProbeResult(
        success=not reason,
        reason=reason,
        duration=ctx.monotonic() - started,
        phases={"request": query_time},
        facts=facts,
    )


def _check_answer(opts: Options, records: list[str]) -> str:
    """Why the answer is not acceptable, or "" when it is."""
    if len(records) < opts.min_answers:
        if not records:
            return f"no {opts.record_type} records for {opts.query}"
        return (
            f"{len(records)} {opts.record_type} records for {opts.query}, "
            f"expected at least {opts.min_answers}"
        )
    present = {_canonical(record) for record in records}
    for expected in opts.expect:
        if _canonical(expected) not in present:
            shown = ", ".join(records[:_SHOWN_ANSWERS]) or "nothing"
            if len(records) > _SHOWN_ANSWERS:
                shown += f", … ({len(records)} in all)"
            return f"answer lacks {expected!r} (got {shown})"
    if opts.expect_regex is not None:
        for record in records:
            if not re.search(opts.expect_regex, record):
                return f"answer {record!r} does not match {opts.expect_regex!r}"
    return ""


def _render(rdata: dns.rdata.Rdata) -> str:
    """An answer as operators write it: '10 mx.example.cn', TXT without quotes."""
    if isinstance(rdata, TXTBase):
        return "".join(part.decode("utf-8", errors="replace") for part in rdata.strings)
    return " ".join(token.rstrip(".") for token in rdata.to_text().split()).lower()


def _canonical(text: str) -> str:
    """The form answers and expectations are compared in."""
    tokens = [token.rstrip(".").lower() for token in text.split()]
    if len(tokens) == 1:
        try:
            return str(ipaddress.ip_address(tokens[0]))
        except ValueError:
            pass
    return " ".join(tokens)


def _natural_order(record: str) -> list[tuple[int, int, str]]:
    """Numbers compare as numbers: '5 mx' < '10 mx', '42.159.0.2' < '42.159.0.10'."""
    return [
        (1, int(part), "") if part.isdigit() else (0, 0, part)
        for part in re.split(r"(\d+)", record)
    ]


def _count(section: list[dns.rrset.RRset]) -> int:
    return sum(len(rrset) for rrset in section)


def _unreachable(exc: dns.resolver.NoNameservers) -> bool:
    """Every server failed without answering (refused, unreachable), not with an rcode."""
    errors = exc.kwargs.get("errors") or []
    return bool(errors) and all(isinstance(entry[3], OSError) for entry in errors)


def _nameserver_error(exc: dns.resolver.NoNameservers) -> str:
    """The last server's complaint: 'nameserver 10.0.0.53 answered SERVFAIL'."""
    errors = exc.kwargs.get("errors") or []
    if not errors:
        return "no nameserver could answer"
    server, _tcp, port, error, _response = errors[-1]
    # str(nameserver) reads "Do53:10.0.0.53@53"; operators know "10.0.0.53" and "10.0.0.53:5353"
    server = str(server).removeprefix("Do53:").rsplit("@", 1)[0]
    if port != 53:
        server = f"[{server}]:{port}" if ":" in server else f"{server}:{port}"
    if isinstance(error, str):  # an rcode
        return f"nameserver {server} answered {error}"
    what = describe_error(error) if isinstance(error, OSError) else str(error)
    return f"nameserver {server}: {what or type(error).__name__}"
