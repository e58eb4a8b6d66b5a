"""``tls``: watch a server's certificate: chain, host name and days until it expires.

One handshake with the verification the options ask for answers the common
case. Only when verification fails is there a second handshake with
verification off, so that an expired or untrusted certificate still reports its
dates (the expiry metric must not vanish exactly when it matters).

The expiry that drives ``warn_days``/``critical_days`` is the earliest
``notAfter`` of the verified chain when the connection was verified, else of
the certificates the server sent: an expired extra certificate the client does
not rely on (an old cross-signed root) does not fail the check.
``ssl_earliest_cert_expiry`` keeps blackbox_exporter's meaning (every
certificate sent), so existing dashboards and rules read the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import ssl
from dataclasses import dataclass

from cryptography import x509
from pydantic import Field, model_validator

from checks import connection_facts
from checks.connection_facts import chain as _chain
from monitor.probe import (
    CheckOptions,
    ProbeContext,
    ProbeResult,
    Target,
    describe_error,
    failure,
)

# ssl_days_left is gone: days are not a base unit (promtool check metrics); dashboards
# compute them from probe_ssl_earliest_cert_expiry - time(), as they do for blackbox.
METRIC_HELP = connection_facts.METRIC_HELP

_DAY = 86400.0
_HOUR = 3600.0
_X509_V_ERR_HOSTNAME_MISMATCH = 62


class Options(CheckOptions):
    host: str = Field(description="Host name or IP address to connect to")
    port: int = Field(443, ge=1, le=65535, description="TCP port of the TLS service")
    server_name: str | None = Field(
        None, description="Name sent as SNI and matched against the certificate (default: host)"
    )
    warn_days: int = Field(
        21, ge=0, description="Fewer whole days left than this: success, but degraded"
    )
    critical_days: int = Field(7, ge=0, description="Fewer whole days left than this: failure")
    verify_chain: bool = Field(True, description="Fail when the chain is not trusted")
    verify_hostname: bool = Field(
        True, description="Fail when the certificate does not name server_name"
    )
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's"
    )

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Options:
        if self.critical_days > self.warn_days:
            raise ValueError("critical_days must not be greater than warn_days")
        return self


@dataclass(frozen=True, slots=True)
class _Peer:
    """The certificates seen in one handshake, leaf first."""

    sent: list[x509.Certificate]
    verified: list[x509.Certificate]
    version: str  # "TLS 1.3", blackbox's probe_tls_version_info
    peername: object  # the address connected to


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    server_name = opts.server_name or opts.host
    phases: dict[str, float] = {}
    try:
        context = _context(opts, ctx)
    except OSError as exc:
        return failure(f"cannot load ca_file {opts.ca_file}: {describe_error(exc)}", started, ctx)
    verify_error: ssl.SSLCertVerificationError | None = None
    try:
        try:
            peer = await _handshake(opts, server_name, context, ctx, phases)
        except ssl.SSLCertVerificationError as exc:
            verify_error = exc
            peer = await _handshake(opts, server_name, ctx.ssl_context(False), ctx, {})
    except OSError as exc:
        return failure(describe_error(verify_error or exc), started, ctx, **phases)
    except ValueError as exc:  # cryptography refuses some DER that OpenSSL tolerates
        return failure(f"cannot parse the server's certificate: {exc}", started, ctx, **phases)
    if not peer.sent:
        return failure("server sent no certificate", started, ctx, **phases)

    now = ctx.wall()
    relied_on = peer.verified or peer.sent
    expiry = min(cert.not_valid_after_utc.timestamp() for cert in relied_on)
    seconds_left = expiry - now
    facts = {
        "ssl_earliest_cert_expiry": min(c.not_valid_after_utc.timestamp() for c in peer.sent),
        **connection_facts.address_facts(peer.peername),
    }
    if peer.verified:
        facts["ssl_last_chain_expiry_timestamp_seconds"] = expiry
    info = {
        "tls_version_info": {"version": peer.version},
        "ssl_last_chain_info": connection_facts.leaf_info(relied_on[0]),
    }

    reason = ""
    degraded = False
    if seconds_left < 0:
        reason = f"certificate expired {_span(-seconds_left)} ago"
    elif verify_error is not None:
        if verify_error.verify_code == _X509_V_ERR_HOSTNAME_MISMATCH:
            reason = f"certificate does not match {server_name}"
        else:
            reason = describe_error(verify_error)
    elif not opts.verify_chain and opts.verify_hostname and not _names(peer.sent[0], server_name):
        reason = f"certificate does not match {server_name}"
    elif seconds_left < opts.critical_days * _DAY:
        reason = f"certificate expires in {_span(seconds_left)}"
    elif seconds_left < opts.warn_days * _DAY:
        reason = f"certificate expires in {_span(seconds_left)}"
        degraded = True

    success = not reason or degraded
    return ProbeResult(
        success=success,
        degraded=degraded,
        reason=reason,
        phases=phases,
        facts=facts,
        info=info,
        duration=ctx.monotonic() - started,
    )


def _context(opts: Options, ctx: ProbeContext) -> ssl.SSLContext:
    if not opts.verify_chain:
        return ctx.ssl_context(False)
    return ctx.ssl_context(True, opts.ca_file, check_hostname=opts.verify_hostname)


async def _handshake(
    opts: Options,
    server_name: str,
    context: ssl.SSLContext,
    ctx: ProbeContext,
    phases: dict[str, float],
) -> _Peer:
    """Connect, complete the handshake, read the peer's certificates, then hang up."""
    started = ctx.monotonic()
    _, writer = await asyncio.open_connection(opts.host, opts.port)
    connected = ctx.monotonic()
    phases["connect"] = connected - started
    try:
        try:
            await writer.start_tls(context, server_hostname=server_name)
        finally:
            phases["tls"] = ctx.monotonic() - connected
        ssl_object = writer.get_extra_info("ssl_object")
        sent = _chain(ssl_object, False)
        if not sent:
            leaf = ssl_object.getpeercert(binary_form=True)
            sent = [leaf] if leaf else []
        verified = _chain(ssl_object, True) if context.verify_mode != ssl.CERT_NONE else []
        return _Peer(
            [x509.load_der_x509_certificate(der) for der in sent],
            [x509.load_der_x509_certificate(der) for der in verified],
            connection_facts.tls_version_label(ssl_object),
            writer.get_extra_info("peername"),
        )
    finally:
        # Abort rather than close: only the handshake matters, and a server that
        # never answers close_notify must not turn a good certificate into a timeout.
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _names(cert: x509.Certificate, server_name: str) -> bool:
    """Whether the certificate's subjectAltName covers ``server_name`` (RFC 6125 wildcards)."""
    try:
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(server_name)
    except ValueError:
        pass
    else:
        return address in alt_names.get_values_for_type(x509.IPAddress)
    wanted = server_name.rstrip(".").lower()
    with contextlib.suppress(UnicodeError):
        wanted = wanted.encode("idna").decode("ascii")  # certificates carry A-labels
    for pattern in alt_names.get_values_for_type(x509.DNSName):
        pattern = pattern.rstrip(".").lower()
        if pattern.startswith("*."):
            first, _, rest = wanted.partition(".")
            if first and rest == pattern[2:]:
                return True
        elif pattern == wanted:
            return True
    return False


def _span(seconds: float) -> str:
    """Whole days (or hours, under a day), rounded down: '3 days', '1 day', '5 hours'."""
    days = math.floor(seconds / _DAY)
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = math.floor(seconds / _HOUR)
    if hours >= 1:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return "less than an hour"
