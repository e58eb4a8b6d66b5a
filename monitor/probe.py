"""The contract between the daemon and check plugins.

A check plugin is one module in ``checks/`` exposing an options model (a
subclass of :class:`CheckOptions`) and ``async def probe(target, opts, ctx) ->
ProbeResult``. A failing service is a result with ``success=False`` and a
``reason``; an exception escaping ``probe`` is a plugin bug and is recorded as
``unknown``, never as ``down``.
"""

from __future__ import annotations

import enum
import math
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict

from monitor.local_failures import note as note_error


class Status(enum.StrEnum):
    """Status of a target or subscription, ordered from best to worst by ``severity``."""

    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def gauge_value(self) -> int:
        """Numeric value exported as ``csp_monitor_subscription_status``."""
        return _GAUGE[self]


# Worst-of ordering for a subscription: a down check outweighs an unknown one
# (we know something is broken), unknown outweighs degraded (we cannot vouch).
_SEVERITY = {
    Status.UP: 0,
    Status.MAINTENANCE: 1,
    Status.DEGRADED: 2,
    Status.UNKNOWN: 3,
    Status.DOWN: 4,
}
_GAUGE = {
    Status.UP: 1,
    Status.DEGRADED: 2,
    Status.DOWN: 3,
    Status.MAINTENANCE: 4,
    Status.UNKNOWN: 0,
}


_WHOLE_NUMBERS: dict[float, float] = {}  # see ProbeResult.share_whole_numbers
_WHOLE_NUMBERS_MAX = 4096


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_compiles)]
"""An option holding a regular expression, refused at config load when it does not compile."""


class CheckOptions(BaseModel):
    """Base of every check type's options; unknown keys are configuration errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Target:
    """One check of one service instantiated for one customer."""

    customer: str
    service: str
    check: str
    type: str

    @property
    def id(self) -> str:
        return f"{self.customer}/{self.service}/{self.check}"


@dataclass(slots=True)
class ProbeResult:
    """The outcome of one probe run.

    ``phases`` are durations in seconds (``resolve``, ``connect``, ``tls``,
    ``processing``, ``transfer`` …); ``facts`` are typed observations a plugin
    wants exported or shown (``http_status_code``, ``ssl_earliest_cert_expiry``,
    ``dns_lookup_time_seconds`` …). ``degraded`` marks a success that breached a
    soft limit (latency, certificate close to expiry).
    """

    success: bool
    duration: float = 0.0
    reason: str = ""
    degraded: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    facts: dict[str, float] = field(default_factory=dict)
    # blackbox's info series (value 1, the facts in labels): family without its probe_
    # prefix → labels, e.g. {"tls_version_info": {"version": "TLS 1.3"}}
    info: dict[str, dict[str, str]] = field(default_factory=dict)
    plugin_error: bool = False
    started_at: float = 0.0
    # what a vendor health feed says, per catalog service (checks/vendor_common.VendorStatus)
    vendor: list[Any] | None = None
    # Message Center posts a tenant lists (monitor/message_center.VendorMessage)
    messages: list[Any] | None = None
    # the probe could not judge the service (a vendor API down): unknown, never down
    inconclusive: bool = False
    # the failure is this host's (out of file descriptors, no resolver): see local_failures
    local_failure: bool = False
    # the target could not be reached (timeout, refused, unreachable, DNS): the customer's
    # outage or ours; the canaries tell which (monitor/sight.py)
    network_failure: bool = False

    def share_whole_numbers(self) -> None:
        """Makes equal whole-number facts and phases one float object each. A target's
        last result is kept until its next, and most of its numbers are the same as every
        other target's (status 200, no redirects, IPv4, 0 s to resolve an address): at
        50,000 targets some 8 MB of equal floats."""
        for values in (self.facts, self.phases):
            for name, value in values.items():  # values change, keys do not
                # -0.0 equals 0.0 but prints "-0.0": it keeps its own object
                if type(value) is float and value.is_integer() and math.copysign(1, value) > 0:
                    shared = _WHOLE_NUMBERS.get(value)
                    if shared is None and len(_WHOLE_NUMBERS) < _WHOLE_NUMBERS_MAX:
                        shared = _WHOLE_NUMBERS[value] = value
                    values[name] = value if shared is None else shared

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "degraded": self.degraded,
            "duration_seconds": round(self.duration, 6),
            "reason": self.reason,
            "phases": {k: round(v, 6) for k, v in self.phases.items()},
            "facts": self.facts,
            "info": self.info,
            "plugin_error": self.plugin_error,
            "inconclusive": self.inconclusive,
            "started_at": self.started_at,
            "vendor": [status.to_json() for status in self.vendor] if self.vendor else None,
        }


@dataclass(slots=True)
class ProbeContext:
    """Shared resources handed to every probe; built once by the daemon."""

    http: aiohttp.ClientSession
    timeout: float
    degraded_latency: float | None = None
    monotonic: Callable[[], float] = time.perf_counter
    wall: Callable[[], float] = time.time
    ssl_contexts: dict[tuple[bool, str | None, bool], ssl.SSLContext] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    # the local address TCP probes connect from (monitor.source_address); None: the system's
    source_address: str | None = None

    @property
    def local_addr(self) -> tuple[str, int] | None:
        """``local_addr`` for asyncio's connections: the source address, any port."""
        return (self.source_address, 0) if self.source_address else None

    def ssl_context(
        self, verify: bool = True, ca_file: str | None = None, check_hostname: bool = True
    ) -> ssl.SSLContext:
        """A cached client TLS context: building one costs milliseconds.

        ``verify=False`` turns off both chain and host name verification;
        ``check_hostname=False`` alone keeps the chain verified.
        """
        key = (verify, ca_file, check_hostname)
        context = self.ssl_contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=ca_file)
            if not verify or not check_hostname:
                context.check_hostname = False
            if not verify:
                context.verify_mode = ssl.CERT_NONE
            self.ssl_contexts[key] = context
        return context

    def slow(self, duration: float) -> bool:
        """True when a successful probe breached the latency threshold."""
        return self.degraded_latency is not None and duration > self.degraded_latency


def failure(reason: str, started: float, ctx: ProbeContext, **phases: float) -> ProbeResult:
    """A failed result with its duration measured from ``started``."""
    return ProbeResult(
        success=False,
        reason=reason,
        duration=ctx.monotonic() - started,
        phases=dict(phases),
    )


def describe_error(exc: BaseException) -> str:
    """A short, operator-readable reason for a network error (no secrets, no traceback).

    The error is also noted for the probe in progress, so the runner can tell a failure
    on this host's side from the target's (``monitor.local_failures``)."""
    note_error(exc)
    # aiohttp's connector errors also subclass the ssl errors: test them first
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(os_error, ssl.SSLError):
            return describe_error(os_error)
        return f"cannot connect: {os_error.strerror or os_error}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
