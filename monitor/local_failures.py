"""Failures on our side of the wire: the monitor's own trouble is not the customer's outage.

A probe that fails because *this host* cannot do its part — it is out of file
descriptors or socket buffers, its resolver does not answer, it has no route —
says nothing about the customer's service. Such a result is ``unknown`` (a
coverage gap, with its reason), never ``down``. This module is the one place
that tells them apart; the runner applies it to every probe.

Checks keep their simple contract (catch, describe, return a failed result):
every error they describe with :func:`monitor.probe.describe_error` is noted
here for the probe in progress (a context variable the runner sets per probe),
so the runner can classify the failure from the error itself, not from words.

Two classes:

* **local**: the failure is ours whatever the world looks like (``EMFILE``,
  ``ENFILE``, ``ENOBUFS``, ``ENOMEM``, ``EADDRNOTAVAIL``, ``EAI_AGAIN`` and the
  other resolver failures of ``getaddrinfo`` that are not an answer, a
  ``connect()`` refused at once by our own routing table, the system resolver
  not answering a ``dns`` check);
* **network**: the target could not be reached (timeouts, refused, reset,
  unreachable after the packets left, NXDOMAIN): the customer's outage *or*
  ours. The canaries decide which (see ``monitor/sight.py``). "Name or service
  not known" for one host is an answer, not a local failure.
"""

from __future__ import annotations

import contextvars
import errno
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:  # probe.py imports this module: its describe_error notes errors here
    from monitor.probe import ProbeResult

# errno → what it means for the operator. These come from this host's kernel.
LOCAL_ERRNOS: dict[int, str] = {
    errno.EMFILE: "this process is out of file descriptors",
    errno.ENFILE: "this host is out of file descriptors",
    errno.ENOBUFS: "this host is out of socket buffer space",
    errno.ENOMEM: "this host is out of memory",
    errno.EADDRNOTAVAIL: "this host has no usable local address",
}
# Only local when connect() itself refused (our routing table); the same errno after
# the SYN left comes from a router on the way (asyncio says "Connect call failed").
NO_ROUTE_ERRNOS: dict[int, str] = {
    errno.ENETUNREACH: "this host has no route to the network",
    errno.EHOSTUNREACH: "this host has no route to the host",
}
# getaddrinfo errors that are not an answer about the name: the resolver failed us.
LOCAL_RESOLVER_ERRORS: dict[int, str] = {
    socket.EAI_AGAIN: "the local resolver did not answer",
    socket.EAI_MEMORY: "the local resolver is out of memory",
}
if hasattr(socket, "EAI_SYSTEM"):
    LOCAL_RESOLVER_ERRORS[socket.EAI_SYSTEM] = "the local resolver failed"

NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)
_REFUSED_CERTIFICATE = (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError)
_CHAIN_DEPTH = 8  # causes followed per error: enough for aiohttp's wrapping, always bounded


@dataclass(frozen=True, slots=True)
class LocalFailure:
    """A failure a check noted as ours without an exception (the system resolver timed out)."""

    why: str


@dataclass(slots=True)
class ProbeErrors:
    """What the probe in progress described: exceptions and local-failure notes."""

    noted: list[BaseException | LocalFailure] = field(default_factory=list)
    network: bool = False


_current: contextvars.ContextVar[ProbeErrors | None] = contextvars.ContextVar(
    "csp_monitor_probe_errors", default=None
)


def start_probe() -> tuple[ProbeErrors, contextvars.Token[ProbeErrors | None]]:
    """A fresh record for one probe (the runner calls this; ``end_probe`` with the token)."""
    errors = ProbeErrors()
    return errors, _current.set(errors)


def end_probe(token: contextvars.Token[ProbeErrors | None]) -> None:
    _current.reset(token)


def note(exc: BaseException) -> None:
    """Remember an error the probe in progress described (``describe_error`` calls this)."""
    errors = _current.get()
    if errors is not None and len(errors.noted) < 32:
        errors.noted.append(exc)


def note_local(why: str) -> None:
    """A check found a failure on our side that has no exception of its own."""
    errors = _current.get()
    if errors is not None:
        errors.noted.append(LocalFailure(why))


def note_network() -> None:
    """A check failed to reach its target (a DNS timeout or NXDOMAIN, …)."""
    errors = _current.get()
    if errors is not None:
        errors.network = True


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, what aiohttp wrapped in it, and its causes (bounded)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < _CHAIN_DEPTH:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "os_error", None)
        for inner in (wrapped, current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                pending.append(inner)


def local_reason(exc: BaseException | LocalFailure) -> str | None:
    """Why ``exc`` is this host's failure, or None when it may be the target's."""
    if isinstance(exc, LocalFailure):
        return exc.why
    for error in _chain(exc):
        if isinstance(error, socket.gaierror):
            why = LOCAL_RESOLVER_ERRORS.get(error.errno or 0)
            if why is not None:
                return f"{why} ({error.strerror or error})"
            continue
        if not isinstance(error, OSError) or error.errno is None:
            continue
        why = LOCAL_ERRNOS.get(error.errno)
        if why is not None:
            return f"{why} ({errno.errorcode.get(error.errno, error.errno)})"
        why = NO_ROUTE_ERRNOS.get(error.errno)
        if why is not None and "Connect call failed" not in str(error):
            return f"{why} ({errno.errorcode.get(error.errno, error.errno)})"
    return None


def is_network_error(exc: BaseException | LocalFailure) -> bool:
    """The target could not be reached (not an answer we judged)."""
    if isinstance(exc, LocalFailure):
        return True
    for error in _chain(exc):
        if isinstance(error, _REFUSED_CERTIFICATE):
            return False  # a server answered with a certificate we refused
        if isinstance(error, socket.gaierror | TimeoutError | aiohttp.ServerDisconnectedError):
            return True
        if isinstance(error, aiohttp.ClientConnectorError):
            return True
        if isinstance(error, OSError) and error.errno in NETWORK_ERRNOS:
            return True
    return False


def classify(result: ProbeResult, errors: ProbeErrors, *, timed_out: bool = False) -> ProbeResult:
    """Mark a failed result local (``unknown``, with why) or network-class, in place."""
    if result.success:
        return result
    for exc in reversed(errors.noted):  # the last error described is the one reported
        why = local_reason(exc)
        if why is not None:
            result.local_failure = True
            result.network_failure = True
            result.inconclusive = True
            result.plugin_error = False
            result.reason = f"local failure, not the service: {why}; {result.reason}"
            return result
    result.network_failure = (
        timed_out or errors.network or any(is_network_error(exc) for exc in errors.noted)
    )
    return result
