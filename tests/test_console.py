"""The web console end to end, in a real headless Chromium against a running daemon.

One daemon, one browser and one SMTP server for the module (they take seconds to
start); each test breaks its own customer's service, so the tests do not lean on
each other. Screenshots go to ``$CONSOLE_SCREENSHOTS`` (or a temporary folder).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import start_smtp_server, stop_smtp_server, unused_port
from tests.console_helpers import (
    Answers,
    Browser,
    DaemonThread,
    chromium,
    close_chromium,
    screenshot,
    screenshots_folder,
)
from tests.test_alerting import Mailbox

CUSTOMERS = {
    "contoso": "Contoso (China) Ltd.",
    # a customer name is data from the config: it must stay text on every page
    "fabrikam": "Fabrikam <img src=x id=injected-name>",
    "northwind": "Northwind Traders",
}
T = TypeVar("T")
INJECTED_STATE = "<img src=x id=injected-reason>"
INJECTED_NOTE = "<script>document.title='pwned'</script><b id=injected-note>bold?</b>"


class Settled(WebDriverWait[webdriver.Chrome]):
    """A wait that also outlasts a page, or a part of it, replaced while it looks."""

    def until(
        self, method: Callable[[webdriver.Chrome], Literal[False] | T], message: str = ""
    ) -> T:
        def looking(driver: webdriver.Chrome) -> T | Literal[False]:
            try:
                return method(driver)
            except WebDriverException as error:
                if gone(error):
                    return False
                raise

        return super().until(looking, message)


def settled(driver: webdriver.Chrome, seconds: float) -> Settled:
    return Settled(driver, seconds)


def gone(error: WebDriverException) -> bool:
    """Whether an element was asked for while its page was being replaced.

    Chromium's driver says so either as a stale reference or, when the swap
    happens during the call itself, as an "unknown error" from the inspector.
    """
    return isinstance(error, StaleElementReferenceException) or (
        "does not belong to the document" in str(error)
    )


def submit(driver: webdriver.Chrome, by: str, value: str, seconds: float = 10) -> None:
    """Click what sends a form (or follows a link) and wait until the next page replaced
    this one, so that what the test reads next is the answer, not the page it left."""
    before = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, value).click()

    def replaced(_: webdriver.Chrome) -> bool:
        try:
            before.is_enabled()
        except WebDriverException as error:
            if gone(error):
                return True
            raise
        return False

    WebDriverWait(driver, seconds).until(replaced, message=f"no new page after {value}")


@dataclass
class World:
    daemon: DaemonThread
    answers: Answers
    mailbox: Mailbox
    base: str
    driver: webdriver.Chrome
    shots: Path

    def status(self, customer: str) -> str:
        state = self.daemon.daemon.board.subscriptions.get((customer, "web-app"))
        return state.status.value if state else "none"

    def recovering(self, incident_id: str) -> bool:
        """The incident manager knows the service is up again (it may be resolved now)."""
        manager = self.daemon.daemon.incidents
        assert manager is not None
        found = [i for i in manager.open_incidents() if i.id == incident_id]
        return bool(found and found[0].recovering_since is not None)

    def open_incident(self, customer: str) -> str:
        manager = self.daemon.daemon.incidents
        assert manager is not None
        found = [i for i in manager.open_incidents() if i.customer == customer]
        return found[0].id if found else ""


def write_config(path: Path, listen: int, smtp_port: int, ports: dict[str, int]) -> None:
    customers = "\n".join(
        f'  - {{id: {cid}, name: "{name}", tenant_domain: {cid}.partner.onmschina.cn, '
        f'tier: {"gold" if cid == "contoso" else "standard"}, vars: {{port: "{ports[cid]}"}}, '
        "subscriptions: [web-app]}"
        for cid, name in CUSTOMERS.items()
    )
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:{listen}
  public_url: http://127.0.0.1:{listen}
  shutdown_grace: 1s
  api_tokens:
    - {{name: noc, token: noc-token, roles: [operate]}}
    - {{name: auditor, token: read-token, roles: [read]}}
  console: {{sign_in_attempts: 3}}
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 200ms
  cooldown: 1h
  correlation: {{enabled: false}}
  # a service that came back after failing is "flapping" and waits for a person to resolve
  # it: the test's on-call engineer resolves it by hand
  flapping: {{window: 1h, high: 2, low: 0}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [noc-email]}}
      - {{after: 1h, notify: [lead-outbox]}}
      - {{after: 2h, action: vendor_ticket, notify: [vendor-outbox]}}
notifications:
  poll_interval: 100ms
channels:
  noc-email: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn],
              timeout: 2}}
  lead-outbox: {{type: file, directory: lead}}
  vendor-outbox: {{type: file, directory: vendor}}
services:
  web-app:
    name: Customer web app
    checks:
      - {{name: health, type: http, url: "http://127.0.0.1:{{customer.port}}/healthz",
         json_path: state, json_expect: ok}}
customers:
{customers}
""")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("console")
    answers = Answers()
    answers.start(list(CUSTOMERS))
    mailbox, smtp_port = Mailbox(), unused_port()
    smtp = start_smtp_server(mailbox, smtp_port)
    listen = unused_port()
    write_config(folder / "config.yaml", listen, smtp_port, answers.ports)
    daemon = DaemonThread(folder / "config.yaml")
    driver = profile = None
    try:
        daemon.start()
        driver, profile = chromium()
        yield World(
            daemon,
            answers,
            mailbox,
            f"http://127.0.0.1:{listen}",
            driver,
            screenshots_folder(folder / "screenshots"),
        )
    finally:
        if driver is not None and profile is not None:
            close_chromium(driver, profile)
        daemon.stop()
        stop_smtp_server(smtp)
        answers.stop()


def wait_for(condition: object, within: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def sign_in(world: World, token: str, person: str, path: str = "/board") -> None:
    driver = world.driver
    # each test starts signed out, whatever the one before it left behind
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get(world.base + path)
    assert "/signin" in driver.current_url  # a page asks for a sign-in first
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "person").send_keys(person)
    submit(driver, By.ID, "sign-in")
    settled(driver, 10).until(lambda d: "/signin" not in d.current_url)


def sign_out(world: World) -> None:
    submit(world.driver, By.ID, "sign-out")
    WebDriverWait(world.driver, 10).until(lambda d: "/signin" in d.current_url)


def cell(driver: webdriver.Chrome, customer: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f'td.cell[data-customer="{customer}"]')
    return found[0].get_attribute("data-status") or "" if found else ""


def timeline_text(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "timeline").text


def test_on_call_signs_in_sees_red_opens_the_mailed_link_acts_and_signs_out(
    world: World,
) -> None:
    driver = world.driver
    wait_for(lambda: world.status("contoso") == "up", what="contoso up")
    sign_in(world, "noc-token", "Li Wei", "/board?refresh=2")
    assert driver.find_element(By.CSS_SELECTOR, "header .person").text.startswith(
        "Signed in as Li Wei (noc)"
    )
    cookie = driver.get_cookie("csp_console_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # http here; https public URLs make it Secure
    settled(driver, 10).until(lambda d: cell(d, "contoso") == "up")
    driver.execute_script("window.notReloaded = true")

    world.answers.state["contoso"] = "broken"
    # the board turns red by itself, without a reload
    settled(driver, 20).until(lambda d: cell(d, "contoso") == "down")
    assert driver.execute_script("return window.notReloaded") is True
    red = driver.find_element(By.CSS_SELECTOR, 'td.cell[data-customer="contoso"]')
    assert red.value_of_css_property("background-color") == "rgba(198, 40, 40, 1)"
    settled(driver, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, 'td.cell[data-customer="contoso"] a.inc')
    )
    # times are in the configured zone, with UTC on hover
    since = driver.find_element(By.CSS_SELECTOR, 'td.cell[data-customer="contoso"] time')
    assert (since.get_attribute("title") or "").endswith(" UTC")
    screenshot(driver, world.shots, "board-desktop")

    # the e-mail's incident link opens the console page, not JSON
    wait_for(lambda: world.mailbox.with_subject("[DOWN]"), what="the opened e-mail")
    [opened] = [m for m in world.mailbox.with_subject("[DOWN]") if "Contoso" in m["Subject"]]
    text = opened.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"Incident page: (http://127\.0\.0\.1:\d+/incidents/INC-[\d-]+)", text)
    assert match, text
    assert "/api/v1/" not in match.group(1)
    driver.get(match.group(1))
    incident_id = match.group(1).rsplit("/", 1)[1]
    assert driver.find_element(By.ID, "incident-id").text == incident_id
    assert driver.find_element(By.ID, "incident-state").text == "open"
    assert "is 'broken', expected 'ok'" in driver.find_element(By.ID, "checks").text
    assert "Contoso (China) Ltd." in driver.find_element(By.ID, "ticket-draft").text

    submit(driver, By.ID, "acknowledge")
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
    assert driver.find_element(By.ID, "incident-state").text == "acknowledged"
    assert "Li Wei (noc)" in driver.find_element(By.ID, "acknowledged-by").text

    driver.find_element(By.ID, "note-text").send_keys("Restarted the app pool; watching.")
    submit(driver, By.ID, "add-note")
    settled(driver, 10).until(lambda d: "Note added" in d.find_element(By.ID, "done").text)
    assert "Restarted the app pool; watching." in timeline_text(driver)

    driver.find_element(By.ID, "case-number").clear()
    driver.find_element(By.ID, "case-number").send_keys("2611290010001234")
    submit(driver, By.ID, "record-case")
    settled(driver, 10).until(lambda d: "case number" in d.find_element(By.ID, "done").text)
    assert driver.find_element(By.ID, "vendor-case").text == "2611290010001234"
    assert (
        "21Vianet case number: 2611290010001234" in driver.find_element(By.ID, "ticket-draft").text
    )
    driver.find_element(By.ID, "copy-ticket").click()
    settled(driver, 5).until(
        lambda d: d.find_element(By.ID, "copy-ticket").get_attribute("data-copied-ok") == "1"
    )
    screenshot(driver, world.shots, "incident-desktop")

    # resolving by hand is refused while it is still down, with the engine's reason
    submit(driver, By.ID, "resolve")
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "problem"))
    assert "still down" in driver.find_element(By.ID, "problem").text
    world.answers.state["contoso"] = "ok"
    wait_for(lambda: world.recovering(incident_id), what="the incident to see the recovery")
    driver.find_element(By.ID, "resolve-note").send_keys("App pool restart fixed it.")
    submit(driver, By.ID, "resolve")
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
    assert driver.find_element(By.ID, "incident-state").text == "resolved"
    assert not driver.find_elements(By.ID, "actions")

    # each action is in the stored timeline (and so the audit chain) under the person's name
    _, events = world.daemon.call(world.daemon.daemon.incidents.get(incident_id))  # type: ignore[union-attr]
    acted = [(e.kind, e.actor) for e in events if e.actor]
    assert ("acknowledged", "Li Wei (noc)") in acted
    assert ("note", "Li Wei (noc)") in acted
    assert ("vendor_case", "Li Wei (noc)") in acted
    assert ("resolved", "Li Wei (noc)") in acted

    sign_out(world)
    driver.get(world.base + "/incidents/" + incident_id)
    assert "/signin" in driver.current_url


def test_phone_view_of_an_incident_keeps_injected_markup_as_text(world: World) -> None:
    driver = world.driver
    world.answers.state["fabrikam"] = INJECTED_STATE
    wait_for(lambda: world.open_incident("fabrikam"), what="fabrikam's incident")
    incident_id = world.open_incident("fabrikam")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        sign_in(world, "noc-token", "Wang Fang", f"/incidents/{incident_id}")
        assert driver.find_element(By.ID, "incident-id").text == incident_id
        driver.find_element(By.ID, "note-text").send_keys(INJECTED_NOTE)
        submit(driver, By.ID, "add-note")
        settled(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
        # the page fits the phone: nothing to scroll sideways, buttons big enough to tap
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        button = driver.find_element(By.ID, "acknowledge")
        assert button.is_displayed() and button.size["height"] >= 44
        assert button.rect["x"] + button.rect["width"] <= 390
        screenshot(driver, world.shots, "incident-phone")
        # the switch in the header turns the page into Chinese, and back
        submit(driver, By.ID, "switch-language")
        settled(driver, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
        )
        assert driver.find_element(By.ID, "acknowledge").text == "确认"
        assert driver.find_element(By.ID, "incident-state").text == "未确认"
        screenshot(driver, world.shots, "incident-phone-zh")
        submit(driver, By.ID, "switch-language")
        settled(driver, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        )
        # injected markup in the customer's name, the probe's reason and a note is text
        page = driver.find_element(By.TAG_NAME, "main").text
        assert "Fabrikam <img src=x id=injected-name>" in page
        assert INJECTED_STATE in driver.find_element(By.ID, "checks").text
        assert "<b id=injected-note>bold?</b>" in timeline_text(driver)
        driver.get(world.base + "/board")
        assert (
            "Fabrikam <img src=x id=injected-name>" in driver.find_element(By.ID, "board-grid").text
        )
        screenshot(driver, world.shots, "board-phone")
        for element in ("injected-name", "injected-reason", "injected-note"):
            assert not driver.find_elements(By.ID, element)
        assert driver.title != "pwned"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        sign_out(world)


def test_forms_without_csrf_or_role_are_refused_and_wrong_tokens_are_slowed(
    world: World,
) -> None:
    world.answers.state["northwind"] = "broken"
    wait_for(lambda: world.open_incident("northwind"), what="northwind's incident")
    incident_id = world.open_incident("northwind")
    manager = world.daemon.daemon.incidents
    assert manager is not None

    operator = Browser(world.base)
    status, _, _ = operator.sign_in("noc-token", "Li Wei")
    assert status == 200
    status, page, headers = operator.request("GET", f"/incidents/{incident_id}")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    # no inline script or style: only the files the CSP allows
    assert not re.search(r"<script(?![^>]*\ssrc=)", page) and " style=" not in page
    for form in ({"text": "no token"}, {"text": "forged", "csrf": "x" * 32}):
        status, page, _ = operator.request("POST", f"/incidents/{incident_id}/notes", form)
        assert status == 403, page
        assert "reload the page" in page
    _, events = world.daemon.call(manager.get(incident_id))
    assert not [e for e in events if e.kind == "note"]

    reader = Browser(world.base)
    assert reader.sign_in("read-token", "Auditor")[0] == 200
    status, page, _ = reader.request("GET", f"/incidents/{incident_id}")
    assert status == 200 and 'id="acknowledge"' not in page
    status, page, _ = reader.request(
        "POST", f"/incidents/{incident_id}/ack", {"csrf": reader.csrf_of(page)}
    )
    assert status == 403 and "role operate" in page
    incident, _ = world.daemon.call(manager.get(incident_id))
    assert incident.state.value == "open"

    # the incidents list finds it by customer
    status, page, _ = operator.request("GET", "/incidents?state=open&q=northwind")
    assert status == 200 and incident_id in page
    assert incident_id not in operator.request("GET", "/incidents?q=contoso")[1]

    # the signed link in the e-mail acknowledges without signing in, then offers the page
    wait_for(
        lambda: [m for m in world.mailbox.with_subject("[DOWN]") if "Northwind" in m["Subject"]],
        what="northwind's e-mail",
    )
    [mail] = [m for m in world.mailbox.with_subject("[DOWN]") if "Northwind" in m["Subject"]]
    body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"http://127\.0\.0\.1:\d+(/ack/\S+)", body)
    assert link, body
    stranger = Browser(world.base)
    status, page, _ = stranger.request("GET", link.group(1))
    assert status == 200 and 'id="ack-by-link"' in page
    status, page, _ = stranger.request("POST", link.group(1), {"by": "Zhang Min"})
    assert status == 200 and "acknowledged by Zhang Min" in page
    assert f'href="/incidents/{incident_id}"' in page
    incident, _ = world.daemon.call(manager.get(incident_id))
    assert incident.acknowledged_by == "Zhang Min (link)"

    # three wrong tokens from one address, then it must wait; a good token afterwards works
    guesser = Browser(world.base)
    for _ in range(3):
        assert guesser.sign_in("guess")[0] == 401
    status, page, headers = guesser.sign_in("noc-token")
    assert status == 429 and "try again in" in page
    time.sleep(int(headers["Retry-After"]))
    assert guesser.sign_in("noc-token")[0] == 200


def test_maintenance_is_planned_in_a_chosen_zone_and_a_report_opens(world: World) -> None:
    driver = world.driver
    sign_in(world, "noc-token", "Li Wei", "/maintenance")
    manager = world.daemon.daemon.incidents
    assert manager is not None

    def fill(duration: str) -> None:
        # the date-time picker's value, as a person would pick it
        start = driver.find_element(By.ID, "mw-start")
        driver.execute_script("arguments[0].value = '2030-01-05T02:30'", start)
        Select(driver.find_element(By.ID, "mw-zone")).select_by_value("Asia/Tokyo")
        driver.find_element(By.ID, "mw-duration").clear()
        driver.find_element(By.ID, "mw-duration").send_keys(duration)
        Select(driver.find_element(By.ID, "mw-recurrence")).select_by_value("weekly")
        Select(driver.find_element(By.ID, "mw-customer")).select_by_value("northwind")
        driver.find_element(By.ID, "mw-reason").send_keys(
            "<i id=injected-reason>Exchange patch</i>"
        )
        submit(driver, By.ID, "mw-add")

    fill("8d")  # longer than its weekly period: refused, naming the field
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "problem"))
    assert "duration" in driver.find_element(By.ID, "problem").text
    assert not world.daemon.call(manager.list_maintenance())
    driver.get(world.base + "/maintenance")
    fill("2h")
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
    [window] = world.daemon.call(manager.list_maintenance())
    # 02:30 in Tokyo is 17:30 UTC the day before
    assert window.starts_at == datetime(2030, 1, 4, 17, 30, tzinfo=UTC).timestamp()
    assert (window.timezone, window.recurrence, window.customer) == (
        "Asia/Tokyo",
        "weekly",
        "northwind",
    )
    assert window.created_by == "Li Wei (noc)"
    listed = driver.find_element(By.ID, "windows").text
    assert "Northwind Traders" in listed and "<i id=injected-reason>Exchange patch</i>" in listed
    assert not driver.find_elements(By.ID, "injected-reason")
    screenshot(driver, world.shots, "maintenance-desktop")
    submit(driver, By.CSS_SELECTOR, f'[data-window="{window.id}"] button.delete')
    settled(driver, 10).until(lambda d: "deleted" in d.find_element(By.ID, "done").text)
    assert not world.daemon.call(manager.list_maintenance())

    driver.get(world.base + "/reports")
    Select(driver.find_element(By.ID, "report-customer")).select_by_value("contoso")
    period = driver.find_element(By.ID, "report-period")
    period.clear()
    period.send_keys(datetime.now(UTC).strftime("%Y-%m"))
    submit(driver, By.ID, "report-open")
    settled(driver, 10).until(lambda d: "/reports/uptime" in d.current_url)
    assert driver.title.startswith("Uptime and SLA report")
    assert "Contoso (China) Ltd." in driver.find_element(By.TAG_NAME, "body").text
    sign_out_from(world, "/board")


def sign_out_from(world: World, path: str) -> None:
    world.driver.get(world.base + path)
    sign_out(world)


def test_the_customers_status_page_shows_the_public_update_and_nothing_internal(
    world: World,
) -> None:
    driver = world.driver
    manager = world.daemon.daemon.incidents
    assert manager is not None
    world.answers.state["fabrikam"] = INJECTED_STATE
    wait_for(lambda: world.open_incident("fabrikam"), what="fabrikam's incident")
    incident_id = world.open_incident("fabrikam")
    internal = "Internal: the app pool on web-03 keeps crashing"
    world.daemon.call(manager.add_note(incident_id, "noc", internal))

    sign_in(world, "noc-token", "Li Wei", f"/incidents/{incident_id}")
    Select(driver.find_element(By.ID, "update-state")).select_by_value("identified")
    public = "We found the cause and are restoring <b id=injected-update>service</b>."
    driver.find_element(By.ID, "update-text").send_keys(public)
    submit(driver, By.ID, "post-update")
    settled(driver, 10).until(lambda d: d.find_elements(By.ID, "done"))
    _, events = world.daemon.call(manager.get(incident_id))
    assert [(e.kind, e.actor) for e in events][-1] == ("customer_update", "Li Wei (noc)")
    link = driver.find_element(By.ID, "status-link").get_attribute("href") or ""
    sign_out(world)

    driver.get(link)  # no sign-in: the signed link is the key
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "Fabrikam <img src=x id=injected-name>: service status" in page
    assert public in page and "Identified" in page
    assert "outage" in driver.find_element(By.ID, "sp-services").text
    # 90 days of daily availability: no data before the monitor ran, today's outage shows
    bars = driver.find_elements(By.CSS_SELECTOR, "#sp-services .bar")
    assert len(bars) == 90
    assert "b-none" in (bars[0].get_attribute("class") or "")
    assert "b-ok" not in (bars[-1].get_attribute("class") or "")
    for secret in (internal, "health", "json path", "127.0.0.1", incident_id, "Contoso"):
        assert secret not in page, secret
    assert not driver.find_elements(By.ID, "injected-update")
    screenshot(driver, world.shots, "status-page")

    twin = Browser(world.base)
    status, body, _ = twin.request("GET", link.replace(world.base, "").replace("?", ".json?"))
    assert status == 200 and public in body and internal not in body
    [service] = json.loads(body)["services"]
    assert len(service["daily"]) == 90 and service["daily"][-1]["availability"] < 1
    wrong = link.replace(world.base, "")[:-3] + "AAA"
    assert twin.request("GET", wrong)[0] == 404
    assert twin.request("GET", "/status/fabrikam")[0] == 404
