"""The email channel against a real aiosmtpd server: plain, STARTTLS, TLS, AUTH, refusals."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from monitor.channels.email import EmailChannel, Options
from monitor.notify.message import DeliveryError, RenderedMessage
from tests.conftest import start_smtp_server, stop_smtp_server

PASSWORD = "smtp-pa55word-never-shown"
MESSAGE = RenderedMessage(
    dedup_key="INC-20261123-0007:opened:0:noc-email",
    channel="noc-email",
    event="opened",
    recipients=(),
    subject="[DOWN] Contoso / Exchange Online 邮件服务中断",
    text="Exchange Online 对 Contoso 不可用。\nReason: connection refused\n",
    html="<p><b>Exchange Online</b> 对 Contoso 不可用</p>",
    sms="Contoso EXO down",
    incident_id="INC-20261123-0007",
)


@dataclass
class Mailbox:
    """aiosmtpd handler: keeps envelopes; addresses starting with 550/451 are refused."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("550"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("451"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued as 4F2A1"

    def mails(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            assert isinstance(envelope.content, bytes)
            mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(mail, EmailMessage)
            parsed.append(mail)
        return parsed


@dataclass(frozen=True)
class Certs:
    ca_file: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return Certs(str(ca_file), server_context)


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (b"monitor", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def smtpd(free_port: int) -> Iterator[Callable[..., Mailbox]]:
    """Starts aiosmtpd (in its own thread) on a free port with the given SMTP options."""
    controllers: list[Controller] = []

    def start(**parameters: Any) -> Mailbox:
        mailbox = Mailbox()
        controllers.append(start_smtp_server(mailbox, free_port, **parameters))
        return mailbox

    yield start
    for controller in controllers:
        stop_smtp_server(controller)


def channel(port: int, **options: Any) -> EmailChannel:
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "CSP Monitor <monitor@noc.example.cn>",
        "to": ["noc@example.cn"],
        "timeout": 5,
    }
    return EmailChannel("noc-email", Options(**(defaults | options)))


async def test_plain_delivery_with_text_html_and_headers(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    mailbox = smtpd()
    receipt = await channel(free_port).send(MESSAGE)

    [envelope] = mailbox.envelopes
    assert envelope.mail_from == "monitor@noc.example.cn"
    assert envelope.rcpt_tos == ["noc@example.cn"]
    [mail] = mailbox.mails()
    assert mail["Subject"] == MESSAGE.subject  # Chinese survives the header encoding
    assert mail["To"] == "noc@example.cn"
    assert mail["From"] == "CSP Monitor <monitor@noc.example.cn>"
    assert mail["Date"]
    assert mail["X-CSP-Monitor-Incident"] == "INC-20261123-0007"
    assert mail["X-CSP-Monitor-Dedup"] == MESSAGE.dedup_key
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Content-Language"] == "en"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert crlf(text.get_content()) == MESSAGE.text  # SMTP carries lines with CRLF
    assert crlf(html.get_content()).strip() == MESSAGE.html
    assert text.get_content_charset() == "utf-8"
    assert receipt.provider_id == mail["Message-ID"]
    assert "queued as 4F2A1" in receipt.detail


async def test_text_only_message_and_recipients_override(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    mailbox = smtpd()
    message = RenderedMessage(
        dedup_key="k1",
        channel="noc-email",
        event="resolved",
        recipients=("lead@example.cn", "oncall@example.cn"),
        subject="恢复",
        text="已恢复",
    )
    await channel(free_port).send(message)

    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["lead@example.cn", "oncall@example.cn"]
    [mail] = mailbox.mails()
    assert mail.get_content_type() == "text/plain"
    assert crlf(mail.get_content()) == "已恢复\n"
    assert mail["X-CSP-Monitor-Incident"] is None


async def test_same_dedup_key_same_message_id(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    """A retry after an ambiguous failure can be dropped by the receiver as a duplicate."""
    mailbox = smtpd()
    first = await channel(free_port).send(MESSAGE)
    second = await channel(free_port).send(MESSAGE)
    other = await channel(free_port).send(RenderedMessage(**{**_fields(MESSAGE), "dedup_key": "x"}))
    assert first.provider_id == second.provider_id != other.provider_id
    assert [m["Message-ID"] for m in mailbox.mails()][:2] == [first.provider_id] * 2


async def test_starttls_with_private_ca(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    mailbox = smtpd(tls_context=certs.server_context, require_starttls=True)
    await channel(free_port, security="starttls", ca_file=certs.ca_file).send(MESSAGE)
    assert len(mailbox.envelopes) == 1


async def test_starttls_untrusted_certificate_is_permanent(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    smtpd(tls_context=certs.server_context, require_starttls=True)
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, security="starttls").send(MESSAGE)  # system CAs only
    assert not caught.value.retryable
    assert "certificate verification failed" in str(caught.value)


async def test_implicit_tls(smtpd: Callable[..., Mailbox], free_port: int, certs: Certs) -> None:
    mailbox = smtpd(ssl_context=certs.server_context)
    await channel(free_port, security="tls", ca_file=certs.ca_file).send(MESSAGE)
    assert len(mailbox.envelopes) == 1


async def test_implicit_tls_untrusted_certificate_is_permanent(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    smtpd(ssl_context=certs.server_context)
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, security="tls").send(MESSAGE)
    assert not caught.value.retryable
    assert "certificate verification failed" in str(caught.value)


async def test_auth_without_tls_is_permanent(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    """The server offers AUTH only after STARTTLS; the channel was set to security none."""
    smtpd(tls_context=certs.server_context, authenticator=authenticate, auth_require_tls=True)
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, username="monitor", password=PASSWORD).send(MESSAGE)
    assert not caught.value.retryable
    assert "AUTH" in str(caught.value)


async def test_auth_over_starttls(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    mailbox = smtpd(
        tls_context=certs.server_context,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    await channel(
        free_port, security="starttls", ca_file=certs.ca_file, username="monitor", password=PASSWORD
    ).send(MESSAGE)
    assert len(mailbox.envelopes) == 1


async def test_wrong_password_is_permanent_and_not_shown(
    smtpd: Callable[..., Mailbox], free_port: int, certs: Certs
) -> None:
    mailbox = smtpd(
        tls_context=certs.server_context, authenticator=authenticate, auth_require_tls=True
    )
    wrong = "wrong-" + PASSWORD
    with pytest.raises(DeliveryError) as caught:
        await channel(
            free_port,
            security="starttls",
            ca_file=certs.ca_file,
            username="monitor",
            password=wrong,
        ).send(MESSAGE)
    assert not caught.value.retryable
    assert "535" in str(caught.value) and "check username and password" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert mailbox.envelopes == []


async def test_server_down_is_retryable(free_port: int) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port).send(MESSAGE)
    assert caught.value.retryable
    assert f"127.0.0.1:{free_port}" in str(caught.value)


async def test_recipient_rejected_550_is_permanent(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    mailbox = smtpd()
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, to=["550-gone@example.cn"]).send(MESSAGE)
    assert not caught.value.retryable
    assert "550-gone@example.cn (550 5.1.1 mailbox unavailable)" in str(caught.value)
    assert mailbox.envelopes == []


async def test_recipient_deferred_451_is_retryable(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    smtpd()
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, to=["451-busy@example.cn"]).send(MESSAGE)
    assert caught.value.retryable


async def test_partly_refused(smtpd: Callable[..., Mailbox], free_port: int) -> None:
    """A permanent refusal of one address does not hold back the others: delivered, noted.
    A temporary one asks for a retry and names who already has the mail."""
    mailbox = smtpd()
    receipt = await channel(free_port, to=["noc@example.cn", "550-gone@example.cn"]).send(MESSAGE)
    assert "refused: 550-gone@example.cn (550" in receipt.detail
    assert mailbox.envelopes[0].rcpt_tos == ["noc@example.cn"]

    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, to=["noc@example.cn", "451-busy@example.cn"]).send(MESSAGE)
    assert caught.value.retryable
    assert "already accepted for noc@example.cn" in str(caught.value)


async def test_no_recipients_is_permanent(free_port: int) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, to=[]).send(MESSAGE)
    assert not caught.value.retryable


async def test_missing_ca_file_is_permanent(free_port: int, tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await channel(free_port, security="starttls", ca_file=str(tmp_path / "no.pem")).send(
            MESSAGE
        )
    assert not caught.value.retryable
    assert "ca_file" in str(caught.value)


def test_options() -> None:
    options = Options(
        host="smtp.example.cn", from_address="a@b.cn", username="u", password=PASSWORD
    )
    assert options.security == "starttls" and options.port == 587
    assert PASSWORD not in repr(options)
    with pytest.raises(ValidationError, match="username and password go together"):
        Options(host="h", from_address="a@b.cn", username="u")
    with pytest.raises(ValidationError, match="extra"):
        Options(host="h", from_address="a@b.cn", starttls=True)
    with pytest.raises(ValidationError):
        Options(host="h", from_address="a@b.cn", security="ssl")


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _fields(message: RenderedMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__slots__}


async def test_a_chinese_incident_mail_arrives_readable(
    smtpd: Callable[..., Mailbox], free_port: int
) -> None:
    """The escalation e-mail rendered in zh-CN, through a real SMTP server."""
    from monitor.notify.sample import sample_context
    from monitor.notify.templates import TemplateRenderer

    parts = TemplateRenderer().render("escalated", sample_context("escalated", "zh-CN"))
    message = RenderedMessage(
        **{**{n: getattr(MESSAGE, n) for n in MESSAGE.__dataclass_fields__},
           "subject": parts.subject, "text": parts.text, "html": parts.html,
           "language": "zh-CN"},
    )  # fmt: skip
    mailbox = smtpd()
    await channel(free_port).send(message)
    [mail] = mailbox.mails()
    assert mail["Subject"] == parts.subject and mail["Subject"].startswith("[已升级 L2][中断]")
    assert mail["Content-Language"] == "zh-CN"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert "开始于：  北京时间 2025-11-24 07:12（UTC 2025-11-23 23:12）" in text.get_content()
    assert '<html lang="zh-CN">' in html.get_content() and "确认 INC-20251123-0007" in (
        html.get_content()
    )
