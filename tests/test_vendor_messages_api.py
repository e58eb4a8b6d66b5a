"""Message Center posts through the daemon: a result of the m365_messages check feeds the
board and ``csp_monitor_vendor_messages``; the API lists the posts per customer and the
proposed windows, and a window becomes maintenance only when an operator confirms it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.daemon import Daemon
from monitor.message_center import VendorMessage
from monitor.probe import ProbeResult
from tests.conftest import WebTarget, run_cli
from tests.test_maintenance import call

DAY = 86400.0


def write_config(path: Path, port: int) -> None:
    customers = "\n".join(
        f"  - {{id: {c}, name: {c.title()}, tenant_domain: {c}.partner.onmschina.cn, "
        f"subscriptions: [exchange-online, m365-messages]}}"
        for c in ("contoso", "fabrikam")
    )
    # Graph and the sign-in point at a local server that answers no token: the check's own
    # probes fail (unknown) and never leave this machine; the test hands the daemon results.
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 1s
  api_tokens: [{{name: noc, token: noc-token, roles: [operate]}}]
defaults: {{interval: 1h, timeout: 1s}}
services:
  exchange-online:
    name: Exchange Online
    checks: [{{name: port, type: tcp, host: 127.0.0.1, port: {port}}}]
  m365-messages:
    name: Microsoft 365 Message Center
    checks:
      - {{name: mc, type: m365_messages, tenant: "{{customer.tenant_domain}}",
         client_id: app, client_secret: s3cret, authority: "http://127.0.0.1:{port}",
         graph_base: "http://127.0.0.1:{port}/v1.0",
         services: {{Exchange Online: exchange-online}}}}
customers:
{customers}
""")


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    instance = Daemon(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


def post(post_id: str, at: float, **changes: Any) -> VendorMessage:
    """A post about a four-hour window from ``at``."""
    values: dict[str, Any] = {
        "id": post_id,
        "title": "Exchange Online maintenance",
        "category": "planForChange",
        "severity": "normal",
        "services": ("exchange-online",),
        "vendor_services": ("Exchange Online",),
        "last_modified": at - 5 * DAY,
        "start": at,
        "end": at + 4 * 3600,
    }
    return VendorMessage(**(values | changes))


def feed(daemon: Daemon, customer: str, messages: list[VendorMessage]) -> None:
    assert daemon.catalog is not None
    spec = daemon.catalog.targets[f"{customer}/m365-messages/mc"]
    daemon.handle_result(spec, ProbeResult(True, 0.1, messages=messages))


def exported(daemon: Daemon, customer: str, category: str, severity: str) -> float | None:
    return daemon.registry.get_sample_value(
        "csp_monitor_vendor_messages",
        {"customer": customer, "category": category, "severity": severity},
    )


async def test_a_proposed_window_is_maintenance_only_once_confirmed(daemon: Daemon) -> None:
    start = daemon.wall() + 7 * DAY
    advice = post(
        "MC900002",
        start,
        category="preventOrFixIssue",
        severity="high",
        start=None,
        end=None,
        action_required_by=start - DAY,
    )
    feed(daemon, "contoso", [post("MC900001", start), advice])
    feed(daemon, "fabrikam", [post("MC900001", start)])
    assert exported(daemon, "contoso", "preventOrFixIssue", "high") == 1
    assert exported(daemon, "fabrikam", "planForChange", "normal") == 1

    status, text, listed = await call(daemon, "GET", "/api/v1/vendor-messages?customer=contoso")
    assert status == 200, text
    assert [m["id"] for m in listed["messages"]] == ["MC900002", "MC900001"]  # action first
    assert listed["messages"][1]["customers"] == ["contoso", "fabrikam"]
    [proposal] = listed["proposed_windows"]
    assert proposal["confirmed"] is False
    # proposed, not applied: no maintenance window yet
    _, _, windows = await call(daemon, "GET", "/api/v1/maintenance")
    assert windows == {"maintenance": []}

    status, text, done = await call(
        daemon, "POST", "/api/v1/vendor-messages/MC900001/confirm", {"customers": ["contoso"]}
    )
    assert status == 201, text
    [window] = done["maintenance"]
    assert (window["customer"], window["service"]) == ("contoso", "exchange-online")
    assert window["reason"].startswith("MC900001: ") and window["created_by"] == "noc"
    _, _, listed = await call(daemon, "GET", "/api/v1/vendor-messages")
    subscriptions = listed["proposed_windows"][0]["subscriptions"]
    assert [(s["customer"], s["confirmed"]) for s in subscriptions] == [
        ("contoso", True),
        ("fabrikam", False),
    ]
    status, _, done = await call(daemon, "POST", "/api/v1/vendor-messages/MC900001/confirm")
    assert status == 201 and [w["customer"] for w in done["maintenance"]] == ["fabrikam"]
    status, _, _ = await call(daemon, "POST", "/api/v1/vendor-messages/MC900001/confirm")
    assert status == 409  # every subscription has its window

    # the vendor withdraws its advice for contoso: the series goes
    feed(daemon, "contoso", [post("MC900001", start)])
    assert exported(daemon, "contoso", "preventOrFixIssue", "high") is None


async def test_confirming_names_what_is_wrong(daemon: Daemon) -> None:
    feed(daemon, "contoso", [post("MC900001", daemon.wall() + DAY)])
    status, _, answer = await call(daemon, "POST", "/api/v1/vendor-messages/MC404/confirm")
    assert status == 404 and answer["errors"][0]["field"] == "id"
    status, _, answer = await call(
        daemon,
        "POST",
        "/api/v1/vendor-messages/MC900001/confirm",
        {"customers": ["contoso", "initech"], "colour": "red"},
    )
    assert status == 400
    assert {e["field"] for e in answer["errors"]} == {"customers[1]", "colour"}
    status, _, answer = await call(
        daemon, "POST", "/api/v1/vendor-messages/MC900001/confirm", {"customers": "contoso"}
    )
    assert status == 400 and answer["errors"][0]["field"] == "customers"
    _, _, windows = await call(daemon, "GET", "/api/v1/maintenance")
    assert windows == {"maintenance": []}  # nothing written by a refused request


async def test_the_cli_lists_and_confirms_proposed_windows(daemon: Daemon) -> None:
    feed(daemon, "contoso", [post("MC900001", daemon.wall() + DAY)])
    url = f"http://127.0.0.1:{daemon.bound_port}"

    async def cli(*args: str) -> tuple[int, str, str]:
        return await run_cli(*args, "--url", url, env={"CSP_MONITOR_TOKEN": "noc-token"})

    code, out, _ = await cli("maintenance", "proposed")
    assert (
        code == 0
        and "MC900001" in out
        and "1 to confirm" in out
        and "contoso/exchange-online" in out
    )
    code, out, _ = await cli("maintenance", "confirm", "MC900001", "--customer", "contoso")
    assert code == 0 and "contoso/exchange-online" in out
    code, out, _ = await cli("maintenance", "proposed")
    assert "confirmed: Exchange Online maintenance" in out
