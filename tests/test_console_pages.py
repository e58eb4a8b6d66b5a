"""Console pages over plain HTTP (no browser): language, the cookie behind an https proxy,
and a vendor-side incident's blast radius on top of the board."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from monitor.daemon import Daemon
from tests.conftest import WebTarget, wait_until

CUSTOMERS = ("contoso", "fabrikam", "northwind")


def write_config(path: Path, target_port: int, public_url: str) -> None:
    customers = "\n".join(
        f"  - {{id: {c}, name: {c.title()} Ltd, tenant_domain: {c}.partner.onmschina.cn, "
        "subscriptions: [exchange-online]}"
        for c in CUSTOMERS
    )
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  public_url: {public_url}
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
  console: {{session_ttl: 2h}}
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  correlation: {{min_customers: 3, hold: 0s}}
escalation_policies:
  standard:
    steps: [{{after: 0s, notify: [outbox]}}]
notifications: {{poll_interval: 100ms}}
channels:
  outbox: {{type: file, directory: outbox}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{target_port}/healthz"}}
customers:
{customers}
""")


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    write_config(tmp_path / "config.yaml", web_target.port, "https://noc.example.cn/monitor")
    instance = Daemon(tmp_path / "config.yaml")
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def signed_in(
    session: aiohttp.ClientSession, base: str, next_path: str = ""
) -> aiohttp.ClientResponse:
    """Sign in as noc; the answer is the redirect with the session cookie. The console's
    cookies are Secure (its public URL is https): a client sends them only over https, so
    the sign-in form's cookie is handed back by hand here."""
    async with session.get(f"{base}/signin") as form:
        page = await form.text()
        nonce = form.cookies["csp_console_signin"].value
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, page
    response = await session.post(
        f"{base}/signin",
        data={"csrf": csrf.group(1), "token": "noc-token", "person": "Li Wei", "next": next_path},
        headers={"Cookie": f"csp_console_signin={nonce}"},
        allow_redirects=False,
    )
    response.release()
    return response


async def test_console_speaks_the_browsers_language_and_behind_https_its_cookie_is_secure(
    daemon: Daemon,
) -> None:
    base = f"http://127.0.0.1:{daemon.bound_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        chinese = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
        async with session.get(f"{base}/signin", headers=chinese) as response:
            page = await response.text()
            assert '<html lang="zh-CN">' in page and "登录" in page
            # the console lives under the public URL's path behind the proxy
            assert 'action="/monitor/signin"' in page
        async with session.get(f"{base}/signin?lang=en", headers=chinese) as response:
            assert '<html lang="en">' in await response.text()
        async with session.get(f"{base}/signin", headers=chinese) as response:
            assert '<html lang="en">' in await response.text()  # the switch is remembered

        # a page asked without a session sends the browser to sign in, and back
        async with session.get(f"{base}/incidents?state=all", allow_redirects=False) as answer:
            assert answer.status == 303
            location = urlsplit(answer.headers["Location"])
            assert location.path == "/monitor/signin"
            assert parse_qs(location.query)["next"] == ["/monitor/incidents?state=all"]
        answer = await signed_in(session, base, "/monitor/incidents?state=all")
        assert answer.headers["Location"] == "/monitor/incidents?state=all"
        # never to another site
        for elsewhere in ("//evil.example/", "/\t/evil.example/", "https://evil.example/"):
            answer = await signed_in(session, base, elsewhere)
            assert answer.headers["Location"] == "/monitor/board", elsewhere
        assert answer.status == 303
        cookie = answer.cookies["csp_console_session"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["max-age"] == "7200"


async def test_a_vendor_side_incident_shows_its_customers_on_top_of_the_board(
    daemon: Daemon, web_target: WebTarget
) -> None:
    base = f"http://127.0.0.1:{daemon.bound_port}"
    manager = daemon.incidents
    assert manager is not None
    await wait_until(
        lambda: all(state.status.value == "up" for state in daemon.board.subscriptions.values()),
        what="all up",
    )
    web_target.status = 503
    await wait_until(
        lambda: any(i.customer == "*" for i in manager.open_incidents()),
        what="the vendor-side incident",
    )
    [group] = [i for i in manager.open_incidents() if i.customer == "*"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        cookie = (await signed_in(session, base)).cookies["csp_console_session"].value
        async with session.get(
            f"{base}/board?fragment=1", headers={"Cookie": f"csp_console_session={cookie}"}
        ) as response:
            assert response.status == 200
            page = await response.text()
    banner = re.search(r'<section class="vendor-side".*?</section>', page, re.S)
    assert banner, page
    assert group.id in banner.group(0)
    assert "3 customers affected" in banner.group(0)
    for customer in CUSTOMERS:
        assert f"<li>{customer.title()} Ltd</li>" in banner.group(0)
