"""The command line as an operator uses it: a real daemon process, signals, probe."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import WebTarget, run_cli, wait_until
from tests.test_daemon import write_config

CLI = [sys.executable, "-m", "monitor.cli"]


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_daemon_process_reloads_on_sighup_and_stops_on_sigterm(
    tmp_path: Path, web_target: WebTarget, free_port: int
) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{free_port}",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "ADMIN_TOKEN": "t"},
    )
    try:
        # a process start: imports and the store take seconds on a loaded two-core machine
        await wait_until(lambda: ready(free_port), within=30.0, what="daemon ready")
        await wait_until(
            lambda: _contains(
                free_port,
                'csp_monitor_subscription_status{customer="fabrikam",service="web-app"} 1',
            ),
            what="fabrikam up",
        )
        # a bad file: refused, old config keeps running
        config.write_text(config.read_text().replace("type: tcp", "type: tcpp"))
        process.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: _contains(free_port, "csp_monitor_config_last_reload_successful 0.0"),
            what="reload refused",
        )
        assert 'customer="fabrikam"' in await scrape(free_port)
        # a good file without fabrikam: its series disappear
        write_config(config, web_target.port, customers=("contoso",))
        process.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: _contains(free_port, "csp_monitor_config_last_reload_successful 1.0"),
            what="reload accepted",
        )
        assert 'customer="fabrikam"' not in await scrape(free_port)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "event=reload_rejected" in log and "unknown check type 'tcpp'" in log
    assert "event=reloaded added=0 changed=0 removed=2" in log
    assert "event=stopped" in log


async def _contains(port: int, text: str) -> bool:
    return text in await scrape(port)


async def test_run_refuses_a_bad_config_with_every_problem(tmp_path: Path) -> None:
    bad = Path(__file__).parent / "testdata" / "invalid" / "many-problems.yaml"
    code, _, err = await run_cli("run", "--config", str(bad))
    assert code == 2
    assert "6 problems" in err
    assert "customers[1].tier: unknown tier 'platinum'" in err


async def test_probe_command_explains_each_check(tmp_path: Path, web_target: WebTarget) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port)
    code, out, _ = await run_cli(
        "probe", "contoso", "web-app", "--config", str(config), env={"ADMIN_TOKEN": "t"}
    )
    assert code == 0, out
    assert "contoso / web-app" in out
    assert "health" in out and "UP" in out
    assert "phases: resolve" in out or "phases: connect" in out
    assert "http_status_code=200" in out
    web_target.status = 503
    code, out, _ = await run_cli(
        "probe", "contoso", "web-app", "--config", str(config), env={"ADMIN_TOKEN": "t"}
    )
    assert code == 1
    assert "status 503 (expected 200)" in out
    code, _, err = await run_cli(
        "probe", "contoso", "sharepoint", "--config", str(config), env={"ADMIN_TOKEN": "t"}
    )
    assert code == 2 and "does not subscribe to 'sharepoint'" in err
