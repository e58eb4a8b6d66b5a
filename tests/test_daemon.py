"""The daemon end to end, in process: probes on schedule, status, metrics, reload."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.daemon import Daemon
from tests.conftest import WebTarget, wait_until

TOKENS = """
  api_tokens:
    - {name: admin, token: "${ADMIN_TOKEN}", roles: [admin]}
    - {name: grafana, token: "read-only-token", roles: [read]}
"""


def write_config(
    path: Path,
    port: int,
    customers: tuple[str, ...] = ("contoso", "fabrikam"),
    extra_check: str = "",
) -> None:
    entries = "\n".join(
        f"  - {{id: {c}, name: {c.title()} Ltd, tenant_domain: {c}.partner.onmschina.cn, "
        f"subscriptions: [web-app]}}"
        for c in customers
    )
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  shutdown_grace: 2s
{TOKENS}
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 3s, failure_threshold: 2,
           success_threshold: 2}}
services:
  web-app:
    name: Customer web app
    checks:
      - {{name: health, type: http, url: "http://127.0.0.1:{port}/healthz?c={{customer.id}}",
         body_regex: healthy, degraded_latency: 1s}}
      - {{name: port, type: tcp, host: 127.0.0.1, port: {port}}}
{extra_check}
customers:
{entries}
""")


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    instance = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token"})
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def get(daemon: Daemon, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}{path}", headers=headers) as response,
    ):
        return response.status, await response.text()


async def post(daemon: Daemon, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{daemon.bound_port}{path}", headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def subscription_status(daemon: Daemon, customer: str = "contoso") -> str:
    return daemon.board.subscriptions[(customer, "web-app")].status.value


async def test_probes_run_and_a_scrape_shows_them(daemon: Daemon) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="contoso up")
    status, text = await get(daemon, "/metrics")
    assert status == 200
    labels = 'customer="contoso",service="web-app",check="health"'
    assert f"probe_success{{{labels}}} 1" in text
    assert f"probe_http_status_code{{{labels}}} 200" in text
    assert f'probe_http_duration_seconds{{{labels},phase="connect"}}' in text
    assert 'csp_monitor_subscription_status{customer="contoso",service="web-app"} 1' in text
    assert "csp_monitor_config_last_reload_successful 1.0" in text
    assert "csp_monitor_scheduler_lag_seconds_count" in text
    assert (await get(daemon, "/healthz"))[0] == 200
    assert (await get(daemon, "/readyz"))[0] == 200


async def test_promtool_finds_no_problem_in_the_exposition(daemon: Daemon) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package prometheus (.ci/run does)"
    await wait_until(lambda: subscription_status(daemon) == "up", what="contoso up")
    _, text = await get(daemon, "/metrics")
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


async def test_outage_is_confirmed_then_recovery(daemon: Daemon, web_target: WebTarget) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    web_target.status = 503
    await wait_until(lambda: subscription_status(daemon) == "down", what="down")
    _, body = await get(daemon, "/api/v1/status?customer=contoso")
    document = json.loads(body)
    [row] = document["subscriptions"]
    assert row["status"] == "down"
    assert row["reason"] == "status 503 (expected 200)"
    health = next(check for check in row["checks"] if check["check"] == "health")
    assert health["last_result"]["facts"]["http_status_code"] == 503
    port = next(check for check in row["checks"] if check["check"] == "port")
    assert port["status"] == "up"  # the port still answers: only the http check fails
    web_target.status = 200
    await wait_until(lambda: subscription_status(daemon) == "up", what="recovered")


async def test_slow_service_is_degraded(daemon: Daemon, web_target: WebTarget) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    web_target.delay = 1.5
    await wait_until(lambda: subscription_status(daemon) == "degraded", what="degraded")
    assert daemon.board.subscriptions[("contoso", "web-app")].reason.startswith("slow: ")


async def test_bad_reload_keeps_the_running_config(daemon: Daemon, tmp_path: Path) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    config = tmp_path / "config.yaml"
    good = config.read_text()
    config.write_text(good.replace("type: tcp", "type: tcpp"))
    assert (await post(daemon, "/-/reload"))[0] == 401
    assert (await post(daemon, "/-/reload", token="read-only-token"))[0] == 403
    status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
    assert status == 400
    assert "unknown check type 'tcpp'" in answer["message"]
    _, text = await get(daemon, "/metrics")
    assert "csp_monitor_config_last_reload_successful 0.0" in text
    requests_before = len(daemon.scheduler)
    assert requests_before == 4  # still probing both customers' two checks
    assert subscription_status(daemon) == "up"


async def test_reload_keeps_unchanged_targets_and_drops_removed_series(
    daemon: Daemon, tmp_path: Path, web_target: WebTarget
) -> None:
    await wait_until(
        lambda: (
            subscription_status(daemon, "fabrikam") == "up" and subscription_status(daemon) == "up"
        ),
        what="both up",
    )
    since = daemon.board.subscriptions[("contoso", "web-app")].since
    write_config(tmp_path / "config.yaml", web_target.port, customers=("contoso", "northwind"))
    status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
    assert status == 200, answer
    assert answer["message"] == "reloaded: 2 targets added, 0 changed, 2 removed"
    assert subscription_status(daemon) == "up"
    assert daemon.board.subscriptions[("contoso", "web-app")].since == since
    _, text = await get(daemon, "/metrics")
    assert 'customer="fabrikam"' not in text
    assert 'customer="northwind"' in text
    await wait_until(lambda: subscription_status(daemon, "northwind") == "up", what="new up")


async def test_stop_lets_in_flight_probes_finish(tmp_path: Path, web_target: WebTarget) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    daemon = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token"})
    await daemon.start()
    web_target.delay = 0.8  # slower than the interval: probes are in flight when we stop
    try:
        await wait_until(
            lambda: any(not t.done() for t in daemon._running) and web_target.requests > 4,
            what="a slow probe in flight",
        )
        in_flight = [t for t in daemon._running if not t.done()]
    finally:
        await daemon.close()  # shutdown_grace is 2 s: enough for a 0.8 s answer
    assert in_flight and all(t.done() and not t.cancelled() for t in in_flight)


async def test_an_outage_confirmed_before_a_restart_is_not_confirmed_again(
    tmp_path: Path, web_target: WebTarget
) -> None:
    from monitor.store import Store

    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, customers=("contoso",))
    # a new streak of failures could not be confirmed during the test
    text = config.read_text().replace("failure_threshold: 2", "failure_threshold: 100")
    config.write_text(text.replace("retry_interval: 100ms", "retry_interval: 300ms"))
    # the previous run confirmed the outage and stopped
    store = await Store.open(f"sqlite:///{tmp_path / 'data' / 'csp-monitor.db'}")
    await store.record_statuses([("contoso", "web-app", "down", 1_800_000_000.0)])
    await store.close()
    web_target.status = 503
    instance = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token"})
    await instance.start()
    try:
        # the first probe after the start fails: down at once, not unknown until re-confirmed
        await wait_until(lambda: subscription_status(instance) == "down", what="still down")
    finally:
        await instance.close()


async def test_sla_series_exist_from_the_first_confirmed_status(
    tmp_path: Path, web_target: WebTarget
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, customers=("contoso",))
    config.write_text(config.read_text() + "reports: {sla_metric_interval: 1h}\n")
    # the first probes time out (3 s each): the status is confirmed ~6 s after the start,
    # after the metric's start-up run
    web_target.delay = 5
    instance = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token"})
    await instance.start()
    series = (
        'csp_monitor_sla_availability_ratio{customer="contoso",service="web-app",window="month"}'
    )
    try:
        await wait_until(lambda: subscription_status(instance) == "down", what="down")
        web_target.delay = 0

        async def exported() -> bool:
            return series in (await get(instance, "/metrics"))[1]

        await wait_until(exported, what="the SLA series")
    finally:
        await instance.close()
