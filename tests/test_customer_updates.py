"""Customer updates by e-mail, end to end: a running daemon, a real SMTP server (aiosmtpd).

An update written on an incident page (or through the API) reaches the customer's
contacts with ``notify: true``, each in their language, and nothing internal
reaches them: not a note, a check, a host, a reason, the incident id, an
acknowledge link or another customer. Queued in the outbox, an update written
while the mail server is away is delivered after a restart.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from monitor.daemon import Daemon
from tests.conftest import WebTarget, start_smtp_server, stop_smtp_server, unused_port, wait_until
from tests.test_alerting import Mailbox

MARKER = "INTERNAL-MARKER-7f3a9c"  # in an internal note: must reach no customer
PUBLIC_TEXT = "Outlook on the web is slow to open; mail delivery is not affected."
PUBLIC_ZH = "我们已查明原因，正在恢复服务。"
INJECTED = "<img src=x id=injected-update>"  # typed in the update: text, never markup
NAMES = {
    "contoso": "Contoso (China) Ltd.",
    "fabrikam": "Fabrikam Shanghai Co.",
    "northwind": "上海北风贸易有限公司",
}


def write_config(path: Path, listen: int, smtp_port: int, shared: int, own: int) -> None:
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:{listen}
  public_url: http://127.0.0.1:{listen}
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  correlation: {{min_customers: 3, hold: 0s}}
escalation_policies:
  standard:
    steps: [{{after: 0s, notify: [noc-outbox]}}]
notifications:
  poll_interval: 100ms
  retry: {{initial: 100ms, max_delay: 200ms}}
  customer_updates_channel: customer-email
channels:
  noc-outbox: {{type: file, directory: outbox}}
  customer-email: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
                   from_address: support@reseller.example.cn, timeout: 2}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{shared}/healthz"}}
  web-app:
    name: Contoso web shop
    checks:
      - {{name: shop-health, type: http, url: "http://127.0.0.1:{own}/healthz"}}
customers:
  - id: contoso
    name: {NAMES["contoso"]}
    tenant_domain: contoso.partner.onmschina.cn
    contacts:
      - {{name: 王芳, email: wang.fang@contoso.cn, language: zh-CN, notify: true}}
      - {{name: Peter Hall, email: peter@contoso.cn, language: en, notify: true}}
      - {{name: Zhao Lei, email: zhao@contoso.cn, reports: true}}
    subscriptions: [exchange-online, web-app]
  - id: fabrikam
    name: {NAMES["fabrikam"]}
    tenant_domain: fabrikam.partner.onmschina.cn
    contacts: [{{name: Anna Wu, email: anna@fabrikam.cn, notify: true}}]
    subscriptions: [exchange-online]
  - id: northwind
    name: {NAMES["northwind"]}
    tenant_domain: northwind.partner.onmschina.cn
    contacts: [{{name: 陈刚, email: chen@northwind.cn, language: zh-CN, notify: true}}]
    subscriptions: [exchange-online]
""")


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no {subtype} part"
    return str(part.get_content())  # type: ignore[attr-defined]


_BOUNDARY = re.compile(r'boundary="[^"]*"')


def headers(message: EmailMessage) -> str:
    """Every header a customer's mail program shows or keeps (but the MIME boundary: a
    random number that may contain any digits, "503" among them)."""
    return "\n".join(
        f"{name}: {_BOUNDARY.sub('boundary=...', str(value))}" for name, value in message.items()
    )


def mentions(text: str, word: str) -> bool:
    """Whether ``text`` says ``word``. A number counts only standing alone: a random
    Message-ID such as <91ee3c89de5039…> holds any digits, "503" among them, and says
    nothing; "status 503" or ":8443/" does."""
    if word.isdigit():
        return re.search(rf"(?<![0-9A-Za-z]){word}(?![0-9A-Za-z])", text) is not None
    return word in text


def to(message: EmailMessage) -> str:
    return str(message["To"])


def internal_words(incident_id: str, listen: int, shared: int, own: int) -> list[str]:
    """What the customer must never read."""
    return [
        MARKER,
        incident_id,
        "owa",
        "shop-health",
        "127.0.0.1",
        str(listen),
        str(shared),
        str(own),
        "503",
        "/ack/",
        "acknowledge",
        "noc",
        "partner.onmschina.cn",
    ]


async def console_update(base: str, incident_id: str, state: str, text: str) -> None:
    """Sign in to the console and post the update from the incident page's form."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/signin") as response:
            page = await response.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        async with session.post(
            f"{base}/signin",
            data={"csrf": csrf.group(1), "token": "noc-token", "person": "Li Wei", "next": "/"},
        ) as response:
            assert response.status == 200
        async with session.get(f"{base}/incidents/{incident_id}") as response:
            page = await response.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        async with session.post(
            f"{base}/incidents/{incident_id}/customer-updates",
            data={"csrf": csrf.group(1), "state": state, "text": text},
        ) as response:
            assert response.status == 200
            assert "done" in str(response.url)


async def test_an_update_from_the_incident_page_reaches_the_contacts_in_their_language_after_a_restart(  # noqa: E501
    tmp_path: Path, web_target: WebTarget
) -> None:
    shared = WebTarget()
    await shared.start()
    listen, smtp_port = unused_port(), unused_port()
    config = tmp_path / "config.yaml"
    write_config(config, listen, smtp_port, shared.port, web_target.port)
    base = f"http://127.0.0.1:{listen}"
    daemon = Daemon(config)
    await daemon.start()
    mailbox, smtp = Mailbox(), None
    try:
        manager = daemon.incidents
        assert manager is not None
        web_target.status = 503
        await wait_until(
            lambda: any(i.customer == "contoso" for i in manager.open_incidents()),
            what="contoso's incident",
        )
        [incident] = [i for i in manager.open_incidents() if i.customer == "contoso"]
        await manager.add_note(incident.id, "noc", f"{MARKER}: pool on web-03 keeps crashing")
        # the mail server is away: the update waits in the outbox
        await console_update(
            base, incident.id, "identified", f"{PUBLIC_ZH}\n{PUBLIC_TEXT} {INJECTED}"
        )
        await daemon.close()

        smtp = start_smtp_server(mailbox, smtp_port)
        daemon = Daemon(config)
        await daemon.start()
        await wait_until(lambda: len(mailbox.messages) >= 2, what="two e-mails")
    finally:
        await daemon.close()
        if smtp is not None:
            stop_smtp_server(smtp)
        await shared.stop()

    received = {to(m): m for m in mailbox.messages}
    # the contact without notify: true gets nothing; each other contact one e-mail
    assert sorted(received) == ["peter@contoso.cn", "wang.fang@contoso.cn"]
    assert len(mailbox.messages) == 2
    chinese, english = received["wang.fang@contoso.cn"], received["peter@contoso.cn"]
    subject = "【已查明原因】Contoso web shop 服务通知 - Contoso (China) Ltd."
    assert str(chinese["Subject"]) == subject
    assert str(english["Subject"]) == "[Identified] Contoso web shop - Contoso (China) Ltd."
    assert "王芳，您好" in body(chinese, "plain") and "您的技术支持团队" in body(chinese, "plain")
    assert "Dear Peter Hall" in body(english, "plain")
    for message in (chinese, english):
        assert INJECTED in body(message, "plain")
        assert "&lt;img src=x id=injected-update&gt;" in body(message, "html")
        assert "<img" not in body(message, "html")
    for message in (chinese, english):
        for word in internal_words(incident.id, listen, shared.port, web_target.port):
            assert not mentions(headers(message), word), (to(message), word)
        for subtype in ("plain", "html"):
            text = body(message, subtype)
            assert PUBLIC_ZH in text and PUBLIC_TEXT in text
            for word in internal_words(incident.id, listen, shared.port, web_target.port):
                assert not mentions(text, word), (to(message), subtype, word)
            for other in ("Fabrikam", "北风"):
                assert other not in text


async def test_a_vendor_side_update_goes_to_each_customer_with_its_own_name_only(
    tmp_path: Path, web_target: WebTarget, free_port: int
) -> None:
    shared = WebTarget()
    await shared.start()
    listen = unused_port()
    config = tmp_path / "config.yaml"
    write_config(config, listen, free_port, shared.port, web_target.port)
    mailbox = Mailbox()
    smtp = start_smtp_server(mailbox, free_port)
    daemon = Daemon(config)
    await daemon.start()
    try:
        manager = daemon.incidents
        assert manager is not None
        shared.status = 503
        await wait_until(
            lambda: any(
                i.customer == "*" and len(manager.blast_radius(i)) == 3
                for i in manager.open_incidents()
            ),
            what="the vendor-side incident with its three customers",
        )
        [group] = [i for i in manager.open_incidents() if i.customer == "*"]
        await manager.add_note(group.id, "noc", f"{MARKER}: 21Vianet case 2511230040000123")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{listen}/api/v1/incidents/{group.id}/customer-updates",
                json={"state": "investigating", "text": PUBLIC_TEXT},
                headers={"Authorization": "Bearer noc-token"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
        await wait_until(lambda: len(mailbox.messages) >= 4, what="four e-mails")
    finally:
        await daemon.close()
        stop_smtp_server(smtp)
        await shared.stop()

    received = {to(m): m for m in mailbox.messages}
    assert sorted(received) == [
        "anna@fabrikam.cn",
        "chen@northwind.cn",
        "peter@contoso.cn",
        "wang.fang@contoso.cn",
    ]
    own = {
        "anna@fabrikam.cn": "fabrikam",
        "chen@northwind.cn": "northwind",
        "peter@contoso.cn": "contoso",
        "wang.fang@contoso.cn": "contoso",
    }
    assert "调查中" in str(received["chen@northwind.cn"]["Subject"])
    for address, message in received.items():
        assert NAMES[own[address]] in str(message["Subject"])
        for word in internal_words(group.id, listen, shared.port, web_target.port):
            assert not mentions(headers(message), word), (address, word)
        for subtype in ("plain", "html"):
            text = body(message, subtype)
            assert NAMES[own[address]] in text and PUBLIC_TEXT in text
            for customer, name in NAMES.items():
                if customer != own[address]:
                    assert name not in text, (address, name)
            for word in internal_words(group.id, listen, shared.port, web_target.port):
                assert not mentions(text, word), (address, subtype, word)
