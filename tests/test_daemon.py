"""The daemon end to end, in process: probes on schedule, status, metrics, reload."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.config import ConfigError
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


async def test_probes_run_and_a_scrape_shows_them(daemon: Daemon, web_target: WebTarget) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="contoso up")
    status, text = await get(daemon, "/metrics")
    assert status == 200
    # `target`: what the check probes, without its query string (it may hold a secret)
    labels = (
        'customer="contoso",service="web-app",check="health",'
        f'target="http://127.0.0.1:{web_target.port}/healthz"'
    )
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


async def test_reload_refuses_an_alias_bomb_before_expanding_it(
    daemon: Daemon, tmp_path: Path
) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    bomb = Path(__file__).parent / "testdata" / "invalid" / "yaml-alias-bomb.yaml"
    shutil.copy(bomb, tmp_path / "config.yaml")
    status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
    assert status == 400, answer
    assert "aliases expand to more than 100000 nodes, the limit" in answer["message"]
    _, text = await get(daemon, "/metrics")
    assert "csp_monitor_config_last_reload_successful 0.0" in text
    assert len(daemon.scheduler) == 4


async def test_a_refused_reload_never_quotes_a_referenced_value(
    tmp_path: Path, web_target: WebTarget, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    secret = "pa55-word-from-env"
    daemon = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token", "SMTP_PASSWORD": secret})
    await daemon.start()
    try:
        # a secret put where a duration belongs: the message must not show it
        config.write_text(
            config.read_text().replace("interval: 300ms", 'interval: "${SMTP_PASSWORD}"')
        )
        status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
        assert status == 400
        assert "defaults.interval: invalid duration '***'" in answer["message"]
        assert daemon.alerting.store is not None
        entries = await daemon.alerting.store.audit_entries()
        rejected = [e for e in entries if e.kind == "config" and e.detail["result"] == "rejected"]
        assert rejected and "invalid duration '***'" in json.dumps(rejected[-1].detail)
        assert secret not in json.dumps([e.detail for e in entries])
        assert "event=reload_rejected" in caplog.text
        assert secret not in caplog.text and secret not in json.dumps(answer)
    finally:
        await daemon.close()


def _broken_message_template(config: Path) -> str:
    (config.parent / "templates" / "opened").mkdir(parents=True)
    (config.parent / "templates" / "opened" / "subject.txt.j2").write_text(
        "{{ incident.customer.name }}\n{{ incident.no_such_field }}\n"
    )
    config.write_text(config.read_text() + "notifications: {templates_dir: templates}\n")
    return "opened/subject.txt.j2:2: UndefinedError"


def _broken_report_template(config: Path) -> str:
    (config.parent / "templates" / "report").mkdir(parents=True)
    (config.parent / "templates" / "report" / "report.txt.j2").write_text("{{ report.nope }}\n")
    config.write_text(config.read_text() + "notifications: {templates_dir: templates}\n")
    return "report/report.txt.j2:1: UndefinedError"


def _new_customer_and_missing_templates_dir(config: Path) -> str:
    port = int(config.read_text().split("127.0.0.1:")[2].split("/")[0])
    write_config(config, port, customers=("contoso", "fabrikam", "northwind"))
    config.write_text(config.read_text() + "notifications: {templates_dir: no-such-dir}\n")
    return (
        f"notifications.templates_dir: directory '{config.parent / 'no-such-dir'}' does not exist"
    )


def _not_utf8(config: Path) -> str:
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    return "the file is not valid UTF-8"


def _unreadable(config: Path) -> str:
    config.unlink()
    config.mkdir()
    return "cannot read"


BROKEN_RELOADS = {
    "message-template": _broken_message_template,
    "report-template": _broken_report_template,
    "new-customer-and-missing-templates-dir": _new_customer_and_missing_templates_dir,
    "not-utf8": _not_utf8,
    "unreadable": _unreadable,
}


@pytest.mark.parametrize("breakage", list(BROKEN_RELOADS), ids=list(BROKEN_RELOADS))
async def test_a_reload_failing_in_any_part_changes_nothing(
    daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture, breakage: str
) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    catalog, renderer = (
        daemon.catalog,
        daemon.alerting.manager and daemon.alerting.manager.renderer,
    )
    expected = BROKEN_RELOADS[breakage](tmp_path / "config.yaml")
    status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
    assert status == 400, answer
    assert answer["status"] == "error" and expected in answer["message"]
    _, text = await get(daemon, "/metrics")
    assert "csp_monitor_config_last_reload_successful 0.0" in text
    assert 'customer="northwind"' not in text
    assert daemon.catalog is catalog and len(daemon.scheduler) == 4
    assert daemon.alerting.manager is not None and daemon.alerting.manager.renderer is renderer
    assert "event=reload_rejected" in caplog.text and expected in caplog.text
    assert daemon.alerting.store is not None
    entries = await daemon.alerting.store.audit_entries()
    last = [entry for entry in entries if entry.kind == "config"][-1]  # probes audit too
    assert last.detail["result"] == "rejected"
    assert any(expected in problem for problem in last.detail["problems"])


async def test_sighup_with_a_broken_file_is_refused_and_logged(
    daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_until(lambda: subscription_status(daemon) == "up", what="up")
    expected = _new_customer_and_missing_templates_dir(tmp_path / "config.yaml")
    loop = asyncio.get_running_loop()
    daemon.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(
            lambda: daemon.metrics.reload_success._value.get() == 0, what="reload refused"
        )
        await wait_until(lambda: "problems=1" in caplog.text, what="the refusal logged")
    finally:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    assert f"event=reload_rejected problem={expected!r}" in caplog.text
    assert "Traceback" not in caplog.text
    assert ("northwind", "web-app") not in daemon.board.subscriptions


async def test_start_refuses_a_broken_template(tmp_path: Path, web_target: WebTarget) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    expected = _broken_message_template(config)
    daemon = Daemon(config, env={"ADMIN_TOKEN": "admin-secret-token"})
    with pytest.raises(ConfigError) as caught:
        await daemon.start()
    assert expected in caught.value.summary()
    assert daemon.bound_port is None


async def test_a_good_reload_applies_the_notification_settings(
    daemon: Daemon, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text() + "notifications: {retry: {max_attempts: 3}}\n")
    status, answer = await post(daemon, "/-/reload", token="admin-secret-token")
    assert status == 200, answer
    assert daemon.alerting.notifier is not None
    assert daemon.alerting.notifier._retry.max_attempts == 3


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
