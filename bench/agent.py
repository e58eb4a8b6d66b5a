"""Probe agents (issue 17): how fast one agent pushes, and what a pushed result costs the
server next to what a probe of its own costs it.

Each round starts the server (``csp-monitor run``, a process of its own, CPU from
/proc/PID/stat) twice:

* ``local``: N targets probed by the server itself (http against nginx, or the aiohttp
  fallback) every second; over a fixed window, the server's CPU divided by the probes it
  ran (``csp_monitor_probes_total`` read from ``/metrics`` before and after);
* ``push``: the same N targets listed for location ``far`` only, so the server probes
  none and decides them all; an agent (``monitor.agent.runner.Agent``, in this process)
  with M results in its buffer pushes them (batches of 1,000, as it does after a
  cut-off) as fast as the server takes them. Results per second are M over the wall
  time; the server's CPU per result is its CPU over that time divided by M.

Figures are median (min–max) over the rounds; the ratio is taken within each round.

    python -m bench.agent                 # 3 rounds, about 2 minutes
    python -m bench.agent --rounds 1 --targets 200 --results 20000   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.common import (
    REPO,
    TargetServer,
    free_port,
    print_table,
    proc_cpu,
    spread,
    stop_process,
    wait_for_port,
    write_config,
)
from monitor.agent.runner import Agent

TOKEN = "bench-agent-token-7c1f5e0a"
BLACKBOX = "blackbox 569 µs (A1)"  # CPU per http probe (bench/README.md, reference figures)
_PROBES = re.compile(r"^csp_monitor_probes_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def config_for(path: Path, targets: int, port: int, *, far: bool) -> Path:
    """N customers with one http check each: probed here every second, or (``far``) listed
    for location ``far`` alone and probed by nobody but the agent."""
    return write_config(
        path,
        targets=targets,
        port=port,
        interval=3600.0 if far else 1.0,
        monitor=[
            f"  store: sqlite:///{path.parent}/store-{'far' if far else 'local'}.db",
            f"  data_dir: {path.parent}/data",
            "  location: here",
            f"  api_tokens: [{{name: agent, token: {TOKEN}, roles: [agent]}}]",
        ],
        defaults=["  locations: [far]", "  quorum: 1"] if far else [],
    )


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=60, proc=process)
    return process, port


def probes_run(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(value) for value in _PROBES.findall(text))


def local_round(tmp: Path, targets: int, target_port: int, window: float) -> float:
    """Server CPU seconds per probe of its own."""
    process, port = start_server(config_for(tmp / "local.yaml", targets, target_port, far=False))
    try:
        time.sleep(3.0)  # every target started, the first collections done
        probes, cpu = probes_run(port), proc_cpu(process.pid)
        time.sleep(window)
        cpu_after, probes_after = proc_cpu(process.pid), probes_run(port)
    finally:
        stop_process(process)
    return (cpu_after - cpu) / max(1.0, probes_after - probes)


async def _push(port: int, targets: int, results: int) -> tuple[float, float]:
    agent = Agent(f"http://127.0.0.1:{port}", "far", TOKEN, name="bench")
    now = time.time()
    for index in range(results):
        customer = index % targets + 1
        agent.buffer.add(
            {
                "target": f"c{customer:05d}/web/ok",
                "at": now - (results - index) * 0.001,
                "status": "up",
                "since": now - 3600,
                "reason": "",
            }
        )
    agent._server = aiohttp.ClientSession()  # what run() opens, without probing
    try:
        started = time.perf_counter()
        delivered = await agent.push_once()
        elapsed = time.perf_counter() - started
    finally:
        await agent._server.close()
    if not delivered or agent.pushed != results:
        raise RuntimeError(f"pushed {agent.pushed} of {results}")
    return elapsed, float(agent.pushed)


def push_round(tmp: Path, targets: int, target_port: int, results: int) -> tuple[float, float]:
    """(results per second, server CPU seconds per pushed result)."""
    process, port = start_server(config_for(tmp / "far.yaml", targets, target_port, far=True))
    try:
        time.sleep(2.0)
        cpu = proc_cpu(process.pid)
        elapsed, pushed = asyncio.run(_push(port, targets, results))
        cpu_after = proc_cpu(process.pid)
    finally:
        stop_process(process)
    return pushed / elapsed, (cpu_after - cpu) / pushed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", type=int, default=400)
    parser.add_argument("--results", type=int, default=50_000)
    parser.add_argument("--window", type=float, default=8.0)
    args = parser.parse_args()
    rates, per_result, per_probe, ratios = [], [], [], []
    with TargetServer() as target, tempfile.TemporaryDirectory(prefix="bench-agent-") as name:
        tmp = Path(name)
        for _ in range(args.rounds):
            probe_cpu = local_round(tmp, args.targets, target.port, args.window)
            rate, result_cpu = push_round(tmp, args.targets, target.port, args.results)
            rates.append(rate)
            per_result.append(result_cpu)
            per_probe.append(probe_cpu)
            ratios.append(result_cpu / probe_cpu)
            print(
                f"round: {rate:,.0f} results/s pushed; server {result_cpu * 1e6:.0f} µs per "
                f"pushed result, {probe_cpu * 1e6:.0f} µs per local probe",
                file=sys.stderr,
            )
    print_table(
        f"Agents: {args.results:,} buffered results pushed by one agent; {args.targets} local "
        f"targets at 1 s ({args.rounds} rounds, target server: {target.kind})",
        [
            ("results one agent pushes per second", spread(rates, "/s"), "—", ""),
            ("server CPU per pushed result", spread(per_result, " µs", 1e6), "—", ""),
            (
                "server CPU per local probe",
                spread(per_probe, " µs", 1e6),
                "blackbox 569 µs (A1)",
                "",
            ),
            ("pushed result ÷ local probe", spread(ratios, "×", 1, 2), "< 1× (cheaper)", ""),
        ],
    )


if __name__ == "__main__":
    main()
