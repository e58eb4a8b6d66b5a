"""``tcp``: connect to a port, optionally over TLS, optionally send and expect bytes.

The simplest probe: it answers "is anything listening, and does it greet us
the way it should" (a custom line-protocol service, a database port, an
Azure VM's RDP/SSH endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from pydantic import Field, field_validator

from checks import connection_facts
from monitor.probe import (
    CheckOptions,
    ProbeContext,
    ProbeResult,
    Regex,
    Target,
    describe_error,
    failure,
)

METRIC_HELP = {**connection_facts.METRIC_HELP, "tcp_tls": "1 if the connection used TLS"}


class Options(CheckOptions):
    host: str = Field(description="Host name or IP address to connect to")
    port: int = Field(ge=1, le=65535, description="TCP port to connect to")
    tls: bool = Field(False, description="Wrap the connection in TLS")
    tls_verify: bool = Field(True, description="Verify the server's certificate and host name")
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's"
    )
    send: str | None = Field(None, description="Text sent after connecting (\\n escapes allowed)")
    expect: Regex | None = Field(None, description="Regular expression the first reply must match")
    read_bytes: int = Field(4096, ge=1, le=1_048_576, description="How much of the reply to read")

    @field_validator("send")
    @classmethod
    def _valid_send(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                payload(value)
            except UnicodeError as exc:
                raise ValueError(f"invalid send text: {exc}") from None
        return value


def payload(send: str) -> bytes:
    """The bytes ``send`` stands for: backslash escapes decoded, other text as UTF-8."""
    return send.encode().decode("unicode_escape").encode("latin-1")


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    try:
        ssl_context = ctx.ssl_context(opts.tls_verify, opts.ca_file) if opts.tls else None
    except OSError as exc:  # a missing or unreadable ca_file: say which, not "plugin error"
        return failure(f"cannot load ca_file {opts.ca_file}: {describe_error(exc)}", started, ctx)
    try:
        reader, writer = await asyncio.open_connection(
            opts.host,
            opts.port,
            ssl=ssl_context,
            server_hostname=opts.host if ssl_context else None,
            local_addr=ctx.local_addr,
        )
    except OSError as exc:
        return failure(describe_error(exc), started, ctx)
    connected = ctx.monotonic()
    phases = {"connect": connected - started}
    try:
        if opts.send is not None:
            writer.write(payload(opts.send))
            await writer.drain()
        if opts.expect is not None:
            reply = await reader.read(opts.read_bytes)
            phases["reply"] = ctx.monotonic() - connected
            text = reply.decode("utf-8", errors="replace")
            if not re.search(opts.expect, text):
                shown = text.strip()[:80] or "nothing"
                return failure(
                    f"reply {shown!r} does not match {opts.expect!r}", started, ctx, **phases
                )
        facts = {
            "tcp_tls": 1.0 if opts.tls else 0.0,
            **connection_facts.address_facts(writer.get_extra_info("peername")),
        }
        info: dict[str, dict[str, str]] = {}
        if (ssl_object := writer.get_extra_info("ssl_object")) is not None:
            tls, info = connection_facts.tls_facts(ssl_object, opts.tls_verify)
            facts.update(tls)
        return ProbeResult(
            success=True,
            duration=ctx.monotonic() - started,
            phases=phases,
            facts=facts,
            info=info,
        )
    except OSError as exc:
        return failure(describe_error(exc), started, ctx, **phases)
    finally:
        # Abort rather than close: a TLS close waits for the server's close_notify (up to
        # 30 s), so a server that never sends one would turn a good probe into a timeout.
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
