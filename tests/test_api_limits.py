"""Idle or dripping clients on the API port cannot take the file descriptors the probes
need: a daemon process with a soft RLIMIT_NOFILE of 1024 and 1,100 idle connections to
its API port keeps probing, and nobody is paged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from pathlib import Path

import aiohttp
import pytest

from monitor.api_server import check_file_limit, files_needed
from tests.conftest import WebTarget, unused_port, wait_until

FLOOD = 1100


def _soft_limit_1024() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def write_config(path: Path, target_port: int, listen_port: int, loop: str = "asyncio") -> None:
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:{listen_port}
  event_loop: {loop}
  shutdown_grace: 1s
  max_concurrency: 64
  max_connections: 256
  header_timeout: 2s
defaults: {{interval: 200ms, retry_interval: 100ms, timeout: 2s, failure_threshold: 2,
           success_threshold: 1}}
incidents: {{default_policy: standard, tick_interval: 100ms}}
escalation_policies:
  standard:
    steps: [{{after: 0s, notify: [pages]}}]
channels:
  pages: {{type: file, directory: pages}}
services:
  web-app:
    name: Customer web app
    checks:
      - {{name: health, type: http, url: "http://127.0.0.1:{target_port}/healthz"}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [web-app]}}
  - {{id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.partner.onmschina.cn,
     subscriptions: [web-app]}}
""")


async def api(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(5)) as reply,
    ):
        return reply.status, await reply.text()


async def subscriptions(port: int) -> dict[str, tuple[str, float]]:
    try:
        code, body = await api(port, "/api/v1/status")
    except (aiohttp.ClientError, TimeoutError):
        return {}
    if code != 200:
        return {}
    rows = json.loads(body)["subscriptions"]
    return {row["customer"]: (row["status"], row["since"]) for row in rows}


async def both_up(port: int) -> bool:
    seen = await subscriptions(port)
    return len(seen) == 2 and all(status == "up" for status, _ in seen.values())


async def stop(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _idle_connection(port: int) -> asyncio.StreamWriter | None:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return None
    return writer


async def test_a_thousand_idle_connections_do_not_starve_the_probes(
    tmp_path: Path, web_target: WebTarget
) -> None:
    listen_port = unused_port()
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, listen_port)
    log_file = tmp_path / "daemon.log"
    with log_file.open("wb") as log_output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_output,
            preexec_fn=_soft_limit_1024,
            env=dict(os.environ),
        )
    writers: list[asyncio.StreamWriter] = []
    try:
        await wait_until(lambda: both_up(listen_port), within=30, what="both subscriptions up")
        before = await subscriptions(listen_port)
        requests_before = web_target.requests
        for _batch in range(FLOOD // 100):  # idle clients: connect, send nothing
            batch = [_idle_connection(listen_port) for _ in range(100)]
            writers += [w for w in await asyncio.gather(*batch) if w is not None]
        await asyncio.sleep(3.0)  # probes run ~15 times each meanwhile
        assert web_target.requests > requests_before + 10  # the probes kept running
        await wait_until(
            lambda: subscriptions(listen_port), within=10, what="the API answering again"
        )
        after = await subscriptions(listen_port)
        # no status ever changed: not down, not even unknown for want of descriptors
        assert after == before
        code, body = await api(listen_port, "/api/v1/incidents?state=all")
        assert code == 200 and json.loads(body)["incidents"] == []
        assert not (tmp_path / "pages").exists() or list((tmp_path / "pages").iterdir()) == []
        _, metrics = await api(listen_port, "/metrics")
        assert "csp_monitor_api_connections_closed_total" in metrics
    finally:
        for writer in writers:
            writer.close()
        await stop(process)
    log = log_file.read_text(errors="replace")
    assert "event=file_limit_low rlimit_nofile=1024" not in log  # 2 × 64 + 256 + 256 fits
    assert "Too many open files" not in log


async def test_the_api_and_metrics_answer_on_uvloop(tmp_path: Path, web_target: WebTarget) -> None:
    """``monitor.event_loop: uvloop``: its transports are not asyncio.Transport
    subclasses, and the connection gate refused every one of them."""
    listen_port = unused_port()
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, listen_port, loop="uvloop")
    log_file = tmp_path / "daemon.log"
    with log_file.open("wb") as log_output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=log_output, env=dict(os.environ),
        )  # fmt: skip
    try:
        await wait_until(lambda: both_up(listen_port), within=30, what="both subscriptions up")
        code, metrics = await api(listen_port, "/metrics")
        assert code == 200 and 'probe_success{customer="contoso"' in metrics
    finally:
        await stop(process)
    assert "Traceback" not in log_file.read_text(errors="replace")


def test_the_start_up_warns_when_the_file_limit_is_too_low(
    caplog: pytest.LogCaptureFixture,
) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert files_needed(512, 256) == 2 * 512 + 256 + 256
    with caplog.at_level(logging.WARNING, logger="monitor.api_server"):
        assert not check_file_limit(soft, 256)  # more probes than descriptors
    assert f"event=file_limit_low rlimit_nofile={soft}" in caplog.text
    assert "LimitNOFILE=" in caplog.text
