"""``email``: send the message over SMTP (aiosmtplib), as text plus HTML when rendered.

Every mail carries ``X-CSP-Monitor-Incident`` and ``X-CSP-Monitor-Dedup`` headers and
a ``Message-ID`` derived from the dedup key, so a retry after an ambiguous failure
(the connection dropped after DATA) produces the same Message-ID and a receiver or a
mail filter can drop the duplicate. ``Auto-Submitted: auto-generated`` keeps
vacation responders from answering the NOC mailbox.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar, Literal

import aiohttp
import aiosmtplib
from pydantic import Field, SecretStr, model_validator

from monitor.channels.base import ChannelOptions, recipients, redact, tls_context
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

Address = str  # "noc@example.cn" or "NOC <noc@example.cn>"


class Options(ChannelOptions):
    recipient_kind: ClassVar[str | None] = "email"
    type: Literal["email"] = Field("email", description="Channel type")
    host: str = Field(description="SMTP server (submission relay), e.g. smtp.example.cn")
    port: int = Field(587, ge=1, le=65535, description="587 for STARTTLS, 465 for TLS, 25 plain")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls: upgrade after connecting (required); tls: implicit TLS; none",
    )
    username: str | None = Field(None, description="SMTP AUTH user name")
    password: SecretStr | None = Field(None, description="SMTP AUTH password")
    from_address: Address = Field(description="From header and envelope sender")
    to: list[Address] = Field([], description="Recipients when the message names none")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds allowed per SMTP command")
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(None, description="PEM bundle of CAs to trust instead of system's")

    @model_validator(mode="after")
    def _credentials_together(self) -> Options:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    def warnings(self) -> list[str]:
        if self.username is not None and self.security == "none":
            return [
                "SMTP AUTH over a plain connection (security: none) sends the password "
                "unencrypted; use security: starttls or tls"
            ]
        return []


class EmailChannel:
    """Sends each message as one mail to all its recipients. ``http`` is not used."""

    def __init__(
        self, name: str, options: Options, http: aiohttp.ClientSession | None = None
    ) -> None:
        self.name = name
        self.options = options

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext | None:
        """Built once: loading a CA bundle takes milliseconds."""
        opts = self.options
        return None if opts.security == "none" else tls_context(opts.tls_verify, opts.ca_file)

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        opts = self.options
        to = recipients(message, opts.to)
        mail = build_mail(message, opts.from_address, to)
        smtp = aiosmtplib.SMTP(
            hostname=opts.host,
            port=opts.port,
            timeout=opts.timeout,
            use_tls=opts.security == "tls",
            start_tls=opts.security == "starttls",  # False for "none": no opportunistic TLS
            tls_context=self._tls,
            username=opts.username,
            password=opts.password.get_secret_value() if opts.password else None,
        )
        try:
            async with smtp:  # connects, upgrades and logs in
                refused, reply = await smtp.send_message(mail, recipients=list(to))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused({r.recipient: (r.code, r.message) for r in exc.recipients}) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _error(exc, opts) from None
        message_id = str(mail["Message-ID"])
        if not refused:
            return DeliveryReceipt(message_id, reply)
        failures = {address: (r.code, r.message) for address, r in refused.items()}
        if any(code < 500 for code, _ in failures.values()):
            # A retry re-sends to those who already got it, with the same Message-ID.
            accepted = ", ".join(a for a in to if a not in refused)
            raise _refused(failures, accepted) from None
        return DeliveryReceipt(message_id, f"{reply}; refused: {_describe(failures)}")


def build_mail(message: RenderedMessage, sender: Address, to: tuple[str, ...]) -> EmailMessage:
    """The MIME message: text/plain, plus text/html as the preferred alternative."""
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = message_id(message.dedup_key, sender)
    mail["Auto-Submitted"] = "auto-generated"
    if message.incident_id:
        mail["X-CSP-Monitor-Incident"] = message.incident_id
    mail["X-CSP-Monitor-Event"] = message.event
    mail["X-CSP-Monitor-Dedup"] = message.dedup_key
    mail.set_content(message.text, charset="utf-8")
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html", charset="utf-8")
    for name, kind, body in message.attachments:
        maintype, _, subtype = kind.partition("/")
        mail.add_attachment(
            base64.b64decode(body), maintype=maintype, subtype=subtype, filename=name
        )
    # RFC 3282: zh-CN or en, as rendered (after the content: set_content clears Content-*)
    mail["Content-Language"] = message.language
    return mail


def message_id(dedup_key: str, sender: Address) -> str:
    """``<hash@domain>``: the same for every attempt at the same message."""
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2].strip(" >") or "csp-monitor.invalid"
    return f"<{digest}.csp-monitor@{domain}>"


def _describe(failures: dict[str, tuple[int, str]]) -> str:
    return "; ".join(f"{address} ({code} {text})" for address, (code, text) in failures.items())


def _refused(failures: dict[str, tuple[int, str]], accepted: str = "") -> DeliveryError:
    """4xx refusals (mailbox busy, greylisting) may pass later; 5xx ones will not."""
    retryable = any(code < 500 for code, _ in failures.values())
    text = f"recipients refused: {_describe(failures)}"
    if accepted:
        text += f"; already accepted for {accepted}"
    return DeliveryError(text, retryable=retryable)


def _error(exc: BaseException, opts: Options) -> DeliveryError:
    server = f"SMTP server {opts.host}:{opts.port}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) and exc.code >= 500:
        return DeliveryError(
            f"{server} refused the login for {opts.username}: {exc.code} {exc.message}; "
            "check username and password",
            retryable=False,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = redact(f"{server} answered {exc.code} {exc.message}", opts.password)
        return DeliveryError(text, retryable=exc.code < 500)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return DeliveryError(f"{server}: timed out", retryable=True)
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPConnectError) else exc
    if isinstance(cause, ssl.SSLCertVerificationError):  # needs ca_file or tls_verify
        reason = cause.verify_message or cause.reason
        return DeliveryError(
            f"{server}: certificate verification failed: {reason}", retryable=False
        )
    if isinstance(exc, ConnectionError):  # refused, reset, disconnected: try again later
        return DeliveryError(f"{server}: {_os_error(cause or exc)}", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPException):  # no STARTTLS or AUTH offered: configuration
        return DeliveryError(f"{server}: {exc.message}", retryable=False)
    return DeliveryError(f"{server}: {_os_error(exc)}", retryable=True)


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
