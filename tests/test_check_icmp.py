"""The ``icmp`` check: 127.0.0.1 from here, and inside network namespaces the tests make
(``unshare -n``, as root): a blackholed address, the kernel's unprivileged ping socket, and
a process that may open neither socket."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from checks import icmp
from monitor.probe import ProbeContext, ProbeResult, Status, Target
from monitor.status import observed_status

ROOT = Path(__file__).resolve().parents[1]
TARGET = Target("contoso", "azure-vm", "ping", "icmp")
# Run inside a namespace: probes the address given and prints what a test asserts on.
PROBE_SCRIPT = """
import asyncio, json, socket, sys
from checks.icmp import IcmpUnavailable, Options, open_socket, probe
from monitor.probe import ProbeContext, Target

try:
    kind = "raw" if open_socket(socket.AF_INET)[1] else "datagram"
except IcmpUnavailable:
    kind = "none"
ctx = ProbeContext(http=None, timeout=float(sys.argv[2]))
result = asyncio.run(probe(Target("c", "s", "k", "icmp"), Options(host=sys.argv[1]), ctx))
print(json.dumps({"socket": kind, "success": result.success, "reason": result.reason,
                  "inconclusive": result.inconclusive, "facts": result.facts}))
"""
# 192.0.2.1 (TEST-NET-1) is reached through a veth whose far end has no address: the
# echo requests leave and nothing ever answers, as with a host behind a dropping firewall
BLACKHOLE = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && "
    "ip addr add 192.0.2.2/24 dev v0 && ip link set v0 up && ip link set v1 up && "
    "ip neigh add 192.0.2.1 lladdr 02:00:00:00:00:01 dev v0"
)


def in_namespace(setup: str, address: str, *, without_net_raw: bool = False) -> dict:
    """Runs the probe in a new network namespace after ``setup`` (shell, as root)."""
    for tool in ("unshare", "ip", "setpriv"):
        assert shutil.which(tool), f"{tool} is missing (util-linux, iproute2: .ci/test)"
    python = [sys.executable, "-c", PROBE_SCRIPT, address, "1"]
    if without_net_raw:  # root, but without the capability raw sockets need
        python = ["setpriv", "--bounding-set=-net_raw", *python]
    command = f"{setup} && exec {' '.join(map(_quote, python))}"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def test_localhost_answers_every_packet(probe_ctx: ProbeContext) -> None:
    result = await icmp.probe(TARGET, icmp.Options(host="127.0.0.1", interval=0.05), probe_ctx)
    assert result.success and not result.degraded, result.reason
    facts = result.facts
    assert (facts["icmp_packets_sent"], facts["icmp_packets_received"]) == (3, 3)
    assert facts["icmp_packet_loss_ratio"] == 0
    assert 0 < facts["icmp_rtt_min_seconds"] <= facts["icmp_rtt_avg_seconds"]
    assert facts["icmp_rtt_avg_seconds"] <= facts["icmp_rtt_max_seconds"]
    assert facts["icmp_reply_hop_limit"] == 64  # Linux's default TTL, unrouted
    assert facts["ip_protocol"] == 4
    assert set(result.phases) == {"resolve", "setup", "rtt"}  # blackbox's phases


async def test_ipv6_localhost(probe_ctx: ProbeContext) -> None:
    result = await icmp.probe(TARGET, icmp.Options(host="::1", interval=0.05), probe_ctx)
    assert result.success, result.reason
    assert result.facts["ip_protocol"] == 6
    assert result.facts["icmp_reply_hop_limit"] == 64


async def test_a_slow_average_is_degraded(probe_ctx: ProbeContext) -> None:
    opts = icmp.Options(host="127.0.0.1", interval=0.05, degraded_rtt="0.000001ms")
    result = await icmp.probe(TARGET, opts, probe_ctx)
    assert result.success and result.degraded
    assert result.reason.startswith("average round trip ")


def test_a_blackholed_address_is_down_with_its_loss() -> None:
    seen = in_namespace(BLACKHOLE, "192.0.2.1")
    assert seen["success"] is False and seen["inconclusive"] is False
    assert seen["reason"] == "no reply from 192.0.2.1: 3 echo requests, 100% loss"
    assert seen["facts"]["icmp_packet_loss_ratio"] == 1.0
    assert "icmp_rtt_avg_seconds" not in seen["facts"]


def test_an_unprivileged_ping_socket_is_used_where_the_kernel_allows_it() -> None:
    allow = 'ip link set lo up && sysctl -qw net.ipv4.ping_group_range="0 2147483647"'
    seen = in_namespace(allow, "127.0.0.1", without_net_raw=True)
    assert seen["socket"] == "datagram"
    assert seen["success"] is True, seen["reason"]
    assert seen["facts"]["icmp_reply_hop_limit"] == 64  # from the IP_TTL control message


def test_no_way_to_ping_is_unknown_and_says_what_to_do() -> None:
    refuse = 'ip link set lo up && sysctl -qw net.ipv4.ping_group_range="1 0"'
    seen = in_namespace(refuse, "127.0.0.1", without_net_raw=True)
    assert seen["socket"] == "none"
    assert (seen["success"], seen["inconclusive"]) == (False, True)
    assert "ping_group_range" in seen["reason"] and "CAP_NET_RAW" in seen["reason"]
    # what the daemon makes of such a result: unknown, never down
    result = ProbeResult(False, reason=seen["reason"], inconclusive=True)
    assert observed_status(result) is Status.UNKNOWN


def test_partial_loss_is_degraded_and_total_loss_down() -> None:
    """The summary of what came back, from a probe's replies (a lossy path cannot be
    made here without traffic control)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stands in; never used
    try:
        cases = [
            # sent, answered, degraded_loss_percent → success, degraded
            (4, 3, 0.0, True, True),
            (4, 3, 30.0, True, False),
            (4, 0, 0.0, False, False),
        ]
        for sent, answered, allowed, success, degraded in cases:
            ping = icmp._Ping(sock, False, socket.AF_INET, "192.0.2.9", 1)
            ping.sent = {n: 0.0 for n in range(1, sent + 1)}
            ping.rtts = {n: 0.01 for n in range(1, answered + 1)}
            opts = icmp.Options(host="192.0.2.9", degraded_loss_percent=allowed)
            ctx = ProbeContext(http=None, timeout=1.0)  # type: ignore[arg-type]
            result = icmp._result(ping, opts, ctx, ctx.monotonic(), {}, {})
            assert (result.success, result.degraded) == (success, degraded), (sent, answered)
    finally:
        sock.close()


def test_target_label_is_the_host() -> None:
    assert icmp.target_address(icmp.Options(host="portal.contoso.cn")) == "portal.contoso.cn"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="packets"):
        icmp.Options(host="x", packets=0)
    with pytest.raises(ValueError, match="interval"):
        icmp.Options(host="x", interval="10s")
