"""Failures on this host's side are unknown (a coverage gap with its reason), never down."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import textwrap

import aiohttp
import pytest

from checks import CheckType, dns, tcp
from monitor.local_failures import is_network_error, local_reason
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Status, Target
from monitor.runner import run_probe
from monitor.status import observed_status

TARGET = Target("contoso", "azure-portal", "port", "tcp")


def _connect_failed(code: int) -> OSError:
    # how asyncio reports an error that came back after the SYN left (an ICMP from a router)
    return OSError(code, "Connect call failed ('42.159.0.10', 443)")


@pytest.mark.parametrize(
    ("error", "local"),
    [
        (OSError(errno.EMFILE, "Too many open files"), True),
        (OSError(errno.ENFILE, "Too many open files in system"), True),
        (OSError(errno.ENOBUFS, "No buffer space available"), True),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), True),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), True),  # our routing table
        (_connect_failed(errno.ENETUNREACH), False),  # a router on the way said so
        (_connect_failed(errno.EHOSTUNREACH), False),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),  # an answer
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), False),
        (TimeoutError(), False),
    ],
)
def test_which_errors_are_this_hosts(error: OSError, local: bool) -> None:
    assert (local_reason(error) is not None) is local


def test_aiohttp_wrapping_is_looked_through() -> None:
    """aiohttp turns a resolver error into OSError(None, msg) raised from the gaierror."""
    inner = OSError(None, "Temporary failure in name resolution")
    inner.__cause__ = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    host = "partner.outlook.cn"
    key = aiohttp.client_reqrep.ConnectionKey(host, 443, True, True, None, None, None)
    wrapped = aiohttp.ClientConnectorError(key, inner)
    assert local_reason(wrapped) == (
        "the local resolver did not answer (Temporary failure in name resolution)"
    )
    assert is_network_error(wrapped)


class _ExhaustedOptions(CheckOptions):
    pass


async def _out_of_descriptors(
    target: Target, opts: _ExhaustedOptions, ctx: ProbeContext
) -> ProbeResult:
    raise OSError(errno.EMFILE, "Too many open files")


async def test_an_error_escaping_a_check_as_emfile_is_unknown_not_a_plugin_bug(
    probe_ctx: ProbeContext,
) -> None:
    check_type = CheckType("exhausted", _ExhaustedOptions, _out_of_descriptors)
    result = await run_probe(check_type, TARGET, _ExhaustedOptions(), probe_ctx)
    assert observed_status(result) is Status.UNKNOWN
    assert result.local_failure and not result.plugin_error
    assert "out of file descriptors" in result.reason


async def test_nxdomain_through_a_resolver_that_answers_is_not_local(
    probe_ctx: ProbeContext,
) -> None:
    """A refused connection to a resolver we named is the network's; the target is down."""
    check_type = CheckType("dns", dns.Options, dns.probe)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        ctx = ProbeContext(http=probe_ctx.http, timeout=0.3)
        opts = dns.Options(query="partner.outlook.cn", resolver=f"127.0.0.1:{port}")
        result = await run_probe(check_type, TARGET, opts, ctx)
    assert observed_status(result) is Status.DOWN
    assert result.network_failure and not result.local_failure


# A real tcp probe in a process whose soft RLIMIT_NOFILE is used up: EMFILE from the kernel.
_EXHAUSTED = textwrap.dedent(
    """
    import asyncio, json, resource, socket, sys
    from checks import CheckType, tcp
    from monitor.probe import ProbeContext, Target
    from monitor.runner import new_http_session, run_probe
    from monitor.status import observed_status

    async def main():
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        session = new_http_session()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        hoard = []
        try:
            while len(hoard) < 100:
                hoard.append(socket.socket())
        except OSError:
            pass
        check = CheckType("tcp", tcp.Options, tcp.probe)
        target = Target("contoso", "azure-portal", "port", "tcp")
        result = await run_probe(
            check, target, tcp.Options(host="127.0.0.1", port=port), ProbeContext(session, 2.0)
        )
        for sock in hoard:
            sock.close()
        await session.close()
        print(json.dumps({"status": observed_status(result).value, "reason": result.reason}))

    asyncio.run(main())
    """
)


def test_a_real_probe_out_of_file_descriptors_is_unknown() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXHAUSTED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "unknown", outcome
    assert "out of file descriptors" in outcome["reason"]


async def test_connection_refused_stays_down(probe_ctx: ProbeContext, free_port: int) -> None:
    check_type = CheckType("tcp", tcp.Options, tcp.probe)
    opts = tcp.Options(host="127.0.0.1", port=free_port)
    result = await run_probe(check_type, TARGET, opts, probe_ctx)
    assert observed_status(result) is Status.DOWN
    assert result.network_failure
