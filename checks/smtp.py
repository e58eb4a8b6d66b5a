"""``smtp``: greet a mail server the way a sending MTA does, without sending mail.

Written for Exchange Online operated by 21Vianet, whose inbound MX hosts are
``<tenant>.mail.protection.partner.outlook.cn``: a "mail is bouncing" ticket is
usually a refused connection, a 4xx/5xx greeting or a failed STARTTLS, and this
check tells those apart. The session is connect, banner (220), EHLO, optionally
STARTTLS and EHLO again, then QUIT.

It speaks those few commands over asyncio streams instead of going through
aiosmtplib, whose ``connect()`` reads the greeting itself: that would merge the
connect and banner timings and hide which step failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from pydantic import Field, model_validator

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
    "smtp_status_code": "Status code of the SMTP greeting (220 when the server accepts mail)",
    "smtp_starttls": "1 if the session was upgraded with STARTTLS",
}

_MAX_REPLY_LINES = 100  # RFC 5321 sets no limit; a real EHLO reply has about a dozen
_GOODBYE_GRACE = 1.0  # seconds allowed for QUIT and TLS close: a slow goodbye is not an outage
# Printable ASCII, no spaces: keeps commands out of EHLO yet lets config placeholders through.
_HELO_NAME = r"^[!-~]+$"


class Options(CheckOptions):
    host: str = Field(
        description="Mail server, e.g. contoso-com.mail.protection.partner.outlook.cn"
    )
    port: int = Field(25, ge=1, le=65535, description="25 for MX, 587 submission, 465 implicit TLS")
    starttls: bool = Field(False, description="Require STARTTLS to be offered and to succeed")
    tls: bool = Field(False, description="Implicit TLS from the first byte (port 465 style)")
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's"
    )
    helo_name: str = Field(
        "csp-monitor.invalid",
        pattern=_HELO_NAME,
        description="Name sent with EHLO; use the monitoring host's FQDN if the server checks it",
    )
    expect_banner: Regex | None = Field(
        None, description="Regular expression the greeting (e.g. '220 host ESMTP ...') must match"
    )

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Options:
        if self.tls and self.starttls:
            raise ValueError("tls (implicit, port 465) and starttls (upgrade) are exclusive")
        return self


@dataclass(frozen=True, slots=True)
class _Reply:
    code: int
    lines: list[str]  # as received, without CRLF: "250-SIZE 157286400"

    @property
    def shown(self) -> str:
        return self.lines[0][:80]


class _SessionError(Exception):
    """A failed exchange; ``usable`` when the connection is still in step for a QUIT."""

    def __init__(self, reason: str, *, usable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.usable = usable


@dataclass
class _Session:
    opts: Options
    ctx: ProbeContext
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    phases: dict[str, float] = field(default_factory=dict)
    facts: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        lap = self.ctx.monotonic()
        if self.opts.tls:
            try:
                await self._start_tls()
            except OSError as exc:
                raise _SessionError(describe_error(exc), usable=False) from exc
            lap = self._time("tls", lap)
        banner = await self._read_reply("banner")
        lap = self._time("banner", lap)
        self.facts["smtp_status_code"] = float(banner.code)
        if banner.code != 220:
            raise _SessionError(f"banner {banner.shown}", usable=True)
        pattern = self.opts.expect_banner
        if pattern is not None and not re.search(pattern, "\n".join(banner.lines)):
            raise _SessionError(f"banner {banner.shown!r} does not match {pattern!r}", usable=True)
        extensions = await self._ehlo("EHLO")
        lap = self._time("ehlo", lap)
        self.facts["smtp_starttls"] = 0.0
        if self.opts.starttls:
            if "STARTTLS" not in extensions:
                raise _SessionError("STARTTLS not offered", usable=True)
            reply = await self._command("STARTTLS")
            if reply.code != 220:
                raise _SessionError(f"STARTTLS failed: {reply.shown}", usable=True)
            try:
                await self._start_tls()
            except OSError as exc:
                raise _SessionError(
                    f"STARTTLS failed: {describe_error(exc)}", usable=False
                ) from exc
            # RFC 3207: what the server said before TLS is void; it must be asked again.
            await self._ehlo("EHLO after STARTTLS")
            self._time("starttls", lap)
            self.facts["smtp_starttls"] = 1.0

    async def quit(self) -> None:
        """Say goodbye politely but briefly; its outcome does not change the result."""
        with contextlib.suppress(_SessionError, OSError, TimeoutError):
            await asyncio.wait_for(self._command("QUIT"), _GOODBYE_GRACE)

    def _time(self, phase: str, since: float) -> float:
        now = self.ctx.monotonic()
        self.phases[phase] = now - since
        return now

    async def _start_tls(self) -> None:
        context = self.ctx.ssl_context(self.opts.tls_verify, self.opts.ca_file)
        await self.writer.start_tls(context, server_hostname=self.opts.host)

    async def _ehlo(self, what: str) -> set[str]:
        reply = await self._command(f"EHLO {self.opts.helo_name}", what)
        if reply.code != 250:
            raise _SessionError(f"{what} rejected: {reply.shown}", usable=True)
        return {line[4:].split(" ", 1)[0].upper() for line in reply.lines[1:]}

    async def _command(self, command: str, what: str | None = None) -> _Reply:
        self.writer.write(command.encode("ascii") + b"\r\n")
        await self.writer.drain()
        return await self._read_reply(what or command)

    async def _read_reply(self, what: str) -> _Reply:
        lines: list[str] = []
        for _ in range(_MAX_REPLY_LINES):
            try:
                raw = await self.reader.readline()
            except ValueError as exc:  # the stream's line limit (64 KiB) was exceeded
                raise _SessionError(f"{what} reply line too long", usable=False) from exc
            if not raw:
                raise _SessionError(f"connection closed while waiting for {what}", usable=False)
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not re.match(r"[0-9]{3}([ -]|$)", line):
                raise _SessionError(f"invalid SMTP reply to {what}: {line[:80]!r}", usable=False)
            lines.append(line)
            if line[3:4] != "-":
                return _Reply(int(line[:3]), lines)
        raise _SessionError(f"{what} reply longer than {_MAX_REPLY_LINES} lines", usable=False)


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    try:
        reader, writer = await asyncio.open_connection(opts.host, opts.port)
    except OSError as exc:
        return failure(describe_error(exc), started, ctx)
    session = _Session(opts, ctx, reader, writer)
    session.phases["connect"] = ctx.monotonic() - started
    try:
        try:
            await session.run()
        except _SessionError as exc:
            result = failure(exc.reason, started, ctx, **session.phases)
            result.facts = session.facts
            if exc.usable:
                await session.quit()
            return result
        except OSError as exc:
            result = failure(describe_error(exc), started, ctx, **session.phases)
            result.facts = session.facts
            return result
        duration = ctx.monotonic() - started
        await session.quit()
        return ProbeResult(
            success=True, duration=duration, phases=session.phases, facts=session.facts
        )
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # A TLS close waits for the peer's close_notify (30 s by default): don't let a
    # peer that never sends one hold the probe, or the runner's timeout, hostage.
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), _GOODBYE_GRACE)
