"""``icmp``: ping a host — packets, loss, round-trip min/avg/max — like blackbox's icmp prober.

The socket is the kernel's unprivileged ICMP datagram socket where
``net.ipv4.ping_group_range`` admits the process's group (the kernel then matches
replies to us), else a raw socket, which needs root or CAP_NET_RAW (replies are matched
by identifier, sequence and source). When neither can be opened the result is
``unknown``, never ``down``: this host cannot ping, which says nothing of the target.

All packets go out ``interval`` apart and the replies are awaited until just before
the probe's timeout; a host that answers none is down, one that loses some (or whose
average round trip exceeds ``degraded_rtt``) is degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from checks import connection_facts
from monitor.config_types import Duration
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target, describe_error, failure

METRIC_HELP = {
    **connection_facts.METRIC_HELP,
    "icmp_packets_sent": "Echo requests sent by the last probe",
    "icmp_packets_received": "Echo replies received by the last probe",
    "icmp_packet_loss_ratio": "Share of the last probe's echo requests left unanswered",
    "icmp_rtt_min_seconds": "Shortest round trip of the last probe, in seconds",
    "icmp_rtt_avg_seconds": "Average round trip of the last probe, in seconds",
    "icmp_rtt_max_seconds": "Longest round trip of the last probe, in seconds",
    "icmp_reply_hop_limit": "TTL (IPv4) or hop limit (IPv6) of the last reply",
}
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's value; Python does not export it
_ECHO: dict[int, tuple[int, int]] = {
    socket.AF_INET: (8, 0),
    socket.AF_INET6: (128, 129),
}  # (request, reply) types
_PROTOCOL: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
_PAYLOAD = b"csp-monitor icmp probe".ljust(48, b".")
_REFUSED = (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)
_HOP_LIMIT_MESSAGES = {
    (socket.IPPROTO_IP, socket.IP_TTL),
    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
}
_MARGIN = 0.05  # of the timeout, left to the runner: the probe reports its own loss


class Options(CheckOptions):
    host: str = Field(description="Host name or IP address to ping")
    packets: int = Field(3, ge=1, le=20, description="Echo requests per probe")
    interval: Duration = Field(0.2, le=5.0, description="Time between two echo requests")
    degraded_loss_percent: float = Field(
        0.0, ge=0, lt=100, description="More loss than this: success, but degraded"
    )
    degraded_rtt: Duration | None = Field(
        None, description="Average round trip above this: success, but degraded"
    )
    ip_protocol: int | None = Field(None, description="4 or 6 to force one (default: either)")


class IcmpUnavailable(Exception):
    """Neither an ICMP datagram socket nor a raw socket can be opened here."""


def target_address(opts: Options) -> str:
    return opts.host


@dataclass
class _Ping:
    """One probe's socket and what came back on it."""

    sock: socket.socket
    raw: bool
    family: int
    address: str
    ident: int
    sent: dict[int, float] = field(default_factory=dict)  # sequence → when
    rtts: dict[int, float] = field(default_factory=dict)
    hop_limit: int | None = None
    sent_all: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def packet(self, sequence: int) -> bytes:
        request, _ = _ECHO[self.family]
        header = struct.pack("!BBHHH", request, 0, 0, self.ident, sequence)
        if self.family == socket.AF_INET:  # the kernel fills ICMPv6 checksums
            checksum = _checksum(header + _PAYLOAD)
            header = struct.pack("!BBHHH", request, 0, checksum, self.ident, sequence)
        return header + _PAYLOAD

    def on_readable(self, clock: float) -> None:
        while True:
            try:
                data, ancillary, _, source = self.sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued for the socket: the loss shows it
                return
            self._reply(data, ancillary, source, clock)

    def _reply(
        self, data: bytes, ancillary: list[tuple[int, int, bytes]], source: Any, clock: float
    ) -> None:
        hop_limit = None
        if self.raw and self.family == socket.AF_INET:
            if len(data) < 20:
                return
            hop_limit, data = data[8], data[(data[0] & 0x0F) * 4 :]
            if source[0] != self.address:  # a raw socket sees every ICMP packet
                return
        for level, kind, value in ancillary:
            if (level, kind) in _HOP_LIMIT_MESSAGES and value:
                hop_limit = int.from_bytes(value[:4], sys.byteorder)
        if len(data) < 8:
            return
        kind, _, _, ident, sequence = struct.unpack("!BBHHH", data[:8])
        if kind != _ECHO[self.family][1] or sequence not in self.sent:
            return
        if self.raw and ident != self.ident:
            return
        if sequence not in self.rtts:
            self.rtts[sequence] = clock - self.sent[sequence]
            self.hop_limit = hop_limit if hop_limit is not None else self.hop_limit
        if len(self.rtts) == len(self.sent) and self.sent_all:
            self.done.set()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def open_socket(family: int) -> tuple[socket.socket, bool]:
    """An ICMP socket and whether it is raw: datagram where allowed, raw otherwise."""
    for kind, raw in ((socket.SOCK_DGRAM, False), (socket.SOCK_RAW, True)):
        try:
            sock = socket.socket(family, kind, _PROTOCOL[family])
        except OSError as exc:
            if exc.errno in _REFUSED:
                continue
            raise
        sock.setblocking(False)
        if family == socket.AF_INET and not raw:
            sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
        elif family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        return sock, raw
    raise IcmpUnavailable(
        "this host may not send ICMP: run csp-monitor as root or with CAP_NET_RAW, or let "
        "its group use ping sockets (sysctl net.ipv4.ping_group_range)"
    )


async def _resolve(opts: Options) -> tuple[int, str]:
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(opts.ip_protocol or 0, socket.AF_UNSPEC)
    infos = await asyncio.get_running_loop().getaddrinfo(
        opts.host, None, family=family, type=socket.SOCK_RAW, proto=socket.IPPROTO_ICMP
    )
    # blackbox prefers IPv6 only when asked to; IPv4 first otherwise
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    info = infos[0]
    return int(info[0]), str(info[4][0])


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    deadline = started + ctx.timeout * (1 - _MARGIN)
    try:
        family, address = await _resolve(opts)
    except (OSError, UnicodeError) as exc:
        return failure(f"cannot resolve {opts.host}: {describe_error(exc)}", started, ctx)
    resolved = ctx.monotonic()
    phases = {"resolve": resolved - started}
    facts = {
        "dns_lookup_time_seconds": phases["resolve"],
        **connection_facts.address_facts((address, 0)),
    }
    try:
        sock, raw = open_socket(family)
    except IcmpUnavailable as exc:
        result = failure(str(exc), started, ctx, **phases)
        result.inconclusive = True  # unknown: our limit, not the target's state
        return result
    except OSError as exc:
        result = failure(f"cannot open an ICMP socket: {describe_error(exc)}", started, ctx)
        result.inconclusive = True
        return result
    loop = asyncio.get_running_loop()
    # the identifier tells a raw socket's replies from other probes' (a datagram socket's
    # is set by the kernel)
    ping = _Ping(sock, raw, family, address, ident=random.randrange(1, 0x10000))
    loop.add_reader(sock.fileno(), lambda: ping.on_readable(ctx.monotonic()))
    try:
        phases["setup"] = ctx.monotonic() - resolved
        error = await _send_all(ping, opts, ctx, deadline)
        if error is not None:
            return failure(error, started, ctx, **phases)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - ctx.monotonic(), 0.0)):
                await ping.done.wait()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return _result(ping, opts, ctx, started, phases, facts)


async def _send_all(ping: _Ping, opts: Options, ctx: ProbeContext, deadline: float) -> str | None:
    """Sends the echo requests ``interval`` apart; the reason when the host cannot be reached."""
    first = ctx.monotonic()
    for sequence in range(1, opts.packets + 1):
        due = first + (sequence - 1) * opts.interval
        if due >= deadline:
            break
        if (wait := due - ctx.monotonic()) > 0:
            await asyncio.sleep(wait)
        try:
            ping.sent[sequence] = ctx.monotonic()
            ping.sock.sendto(ping.packet(sequence), (ping.address, 0))
        except OSError as exc:
            return describe_error(exc)
    ping.sent_all = True
    if len(ping.rtts) == len(ping.sent):
        ping.done.set()
    return None


def _result(
    ping: _Ping,
    opts: Options,
    ctx: ProbeContext,
    started: float,
    phases: dict[str, float],
    facts: dict[str, float],
) -> ProbeResult:
    sent, received = len(ping.sent), len(ping.rtts)
    loss = (sent - received) / sent if sent else 1.0
    facts.update(
        icmp_packets_sent=float(sent),
        icmp_packets_received=float(received),
        icmp_packet_loss_ratio=loss,
    )
    duration = ctx.monotonic() - started
    if not received:
        result = ProbeResult(
            success=False,
            reason=f"no reply from {ping.address}: {sent} echo requests, 100% loss",
            duration=duration,
            phases=phases,
            facts=facts,
        )
        result.network_failure = True
        return result
    rtts = sorted(ping.rtts.values())
    average = sum(rtts) / len(rtts)
    facts.update(icmp_rtt_min_seconds=rtts[0], icmp_rtt_avg_seconds=average)
    facts["icmp_rtt_max_seconds"] = rtts[-1]
    if ping.hop_limit is not None:
        facts["icmp_reply_hop_limit"] = float(ping.hop_limit)
    phases["rtt"] = average  # blackbox's rtt phase: one round trip
    reason = ""
    if loss * 100 > opts.degraded_loss_percent:
        reason = f"{loss:.0%} packet loss ({received} of {sent} replies)"
    elif opts.degraded_rtt is not None and average > opts.degraded_rtt:
        reason = f"average round trip {average * 1000:.1f} ms > {opts.degraded_rtt * 1000:g} ms"
    return ProbeResult(
        success=True,
        degraded=bool(reason),
        reason=reason,
        duration=duration,
        phases=phases,
        facts=facts,
    )
