"""Goal 1: CPU per HTTP probe inside the running daemon, against two references.

Variants, each run as its own process, in rounds whose order rotates:

* ``floor-asyncio`` / ``floor-uvloop``: a bare aiohttp loop doing the same GETs with a new
  connection each (``force_close``), 50 in flight: the floor any Python prober pays;
* ``daemon-asyncio`` / ``daemon-uvloop``: a real ``Daemon`` with N targets at a short
  interval (schedule + probe + evaluate + metrics update), measured over a fixed window
  after a warm-up; probes counted by wrapping ``handle_result``;
* ``blackbox``: the Debian prometheus-blackbox-exporter doing the same probe through its
  ``/probe`` endpoint (module http_2xx), loaded by ``wrk -t1 -c50``; its CPU is the change
  of utime+stime in /proc/PID/stat, so serving ``/probe`` is included (as in anchor A1).

CPU is getrusage(RUSAGE_SELF) user+sys over the measured phase only. Figures are
median (min–max) over the rounds; ratios are taken pair by pair within each round.
The targets are served by nginx (one worker) on 127.0.0.1; its stub_status counts the
connections accepted, which should be one per probe.

    python -m bench.probe_cpu                 # 5 rounds, about 4 minutes
    python -m bench.probe_cpu --rounds 1 --window 5 --probes 5000   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    LOOPS,
    DaemonProbe,
    TargetServer,
    find_tool,
    machine_busy,
    free_port,
    nginx_accepted,
    print_table,
    proc_cpu,
    proc_memory,
    run_loop,
    run_worker,
    self_cpu,
    spread,
    stop_process,
    verdict,
    wait_for_port,
    write_config,
)

# Anchors from /work/shared/reference/perf-anchors.md (same machine, 2026-11-23).
REF_FLOOR = {"asyncio": 258e-6, "uvloop": 204e-6}  # B1, B2
REF_BLACKBOX = 569e-6  # A1
REF_BLACKBOX_RATE = 2966  # A2
GOAL_RATIO = 1.5
WORKER_TIMEOUT = 300.0

# ---------------------------------------------------------------------- workers (own process)


async def floor_worker(port: int, probes: int, conc: int, warmup: int) -> dict[str, Any]:
    """A bare aiohttp loop: ``probes`` GETs, new connection each, ``conc`` in flight."""
    import aiohttp
    from yarl import URL

    urls = [URL(f"http://127.0.0.1:{port}/ok?c=c{i:05d}") for i in range(1, 1001)]
    failures = 0
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def batch(count: int) -> None:
            left = [count]

            async def worker() -> None:
                nonlocal failures
                while left[0] > 0:
                    left[0] -= 1
                    async with session.get(urls[left[0] % len(urls)]) as resp:
                        await resp.read()
                        failures += resp.status != 200

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), 120)

        await batch(warmup)
        failures = 0
        accepted = nginx_accepted(port)
        cpu, started, busy = self_cpu(), time.perf_counter(), machine_busy()
        await batch(probes)
        cpu, elapsed = self_cpu() - cpu, time.perf_counter() - started
        busy = machine_busy() - busy
        after = nginx_accepted(port)
    return {
        "probes": probes,
        "failures": failures,
        "cpu": cpu,
        "elapsed": elapsed,
        "machine_busy": busy,
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory()["VmHWM"],
    }


async def daemon_worker(
    port: int, targets: int, interval: float, window: float, warmup: float
) -> dict[str, Any]:
    """A real Daemon probing ``targets`` targets every ``interval`` s; measured over ``window``."""
    from monitor.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="bench-probe-cpu-") as tmp:
        config = write_config(
            Path(tmp) / "config.yaml", targets=targets, port=port, interval=interval
        )
        daemon = Daemon(config, env={}, listen="127.0.0.1:0")
        probe = DaemonProbe(daemon)
        await daemon.start()
        try:
            # warm-up: every target probed at least once, 500 probes, and `warmup` seconds
            started = time.monotonic()
            while time.monotonic() - started < 60 and (
                probe.completed < max(targets, 500) or time.monotonic() - started < warmup
            ):
                await asyncio.sleep(0.1)
            accepted = nginx_accepted(port)
            completed, failed = probe.completed, probe.failed
            cpu, begun, busy = self_cpu(), time.perf_counter(), machine_busy()
            await asyncio.sleep(window)
            cpu, elapsed = self_cpu() - cpu, time.perf_counter() - begun
            busy = machine_busy() - busy
            completed, failed = probe.completed - completed, probe.failed - failed
            after = nginx_accepted(port)
        finally:
            await daemon.close()
    return {
        "probes": completed,
        "failures": failed,
        "cpu": cpu,
        "elapsed": elapsed,
        "machine_busy": busy,
        "scheduled_rate": targets / interval,
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory()["VmHWM"],
    }


# ---------------------------------------------------------------------- blackbox exporter

BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
"""


class Exporter:
    """prometheus-blackbox-exporter on a free 127.0.0.1 port, with module http_2xx."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        binary = find_tool("prometheus-blackbox-exporter")
        if binary is None:
            raise RuntimeError("prometheus-blackbox-exporter is not installed")
        self._dir = tempfile.TemporaryDirectory(prefix="bench-blackbox-")
        config = Path(self._dir.name) / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def probe_url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.port}/probe?module=http_2xx&target={target}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def wrk(url: str, seconds: float, conc: int) -> tuple[int, int]:
    """Run wrk -t1 against ``url``; return (requests completed, non-2xx responses)."""
    binary = find_tool("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed")
    done = subprocess.run(
        [binary, "-t1", f"-c{conc}", f"-d{seconds:g}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    requests = re.search(r"(\d+) requests in", done.stdout)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if requests is None:
        raise RuntimeError(f"cannot read wrk's output:\n{done.stdout}")
    return int(requests.group(1)), int(bad.group(1)) if bad else 0


def blackbox_round(
    exporter: Exporter, server: TargetServer, seconds: float, conc: int
) -> dict[str, Any]:
    assert exporter.proc is not None
    accepted = server.accepted()
    cpu, started, busy = proc_cpu(exporter.proc.pid), time.perf_counter(), machine_busy()
    probes, bad = wrk(exporter.probe_url(server.url), seconds, conc)
    cpu, elapsed = proc_cpu(exporter.proc.pid) - cpu, time.perf_counter() - started
    busy = machine_busy() - busy
    after = server.accepted()
    return {
        "probes": probes,
        "failures": bad,
        "cpu": cpu,
        "elapsed": elapsed,
        "machine_busy": busy,
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory(exporter.proc.pid)["VmHWM"],
    }


def check_exporter(exporter: Exporter, server: TargetServer) -> None:
    with urllib.request.urlopen(exporter.probe_url(server.url), timeout=10) as resp:
        text = resp.read().decode()
    if "probe_success 1" not in text:
        raise RuntimeError(f"the exporter's probe fails:\n{text}")


# ---------------------------------------------------------------------- orchestration


def run_rounds(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with TargetServer(args.server) as server:
        print(f"target server: {server.kind} on {server.url}", file=sys.stderr)
        exporter = Exporter() if "blackbox" in variants else None
        try:
            if exporter is not None:
                exporter.start()
                check_exporter(exporter, server)
                wrk(exporter.probe_url(server.url), 2, args.conc)  # warm-up
            for round_index in range(args.rounds):
                shift = round_index % len(variants)
                order = variants[shift:] + variants[:shift]
                for variant in order:
                    kind, _, loop = variant.partition("-")
                    if kind == "blackbox":
                        assert exporter is not None
                        result = blackbox_round(exporter, server, args.bb_seconds, args.conc)
                    else:
                        worker_args = [
                            "--worker", kind, "--loop", loop, "--port", str(server.port),
                            "--probes", str(args.probes), "--conc", str(args.conc),
                            "--targets", str(args.targets), "--interval", str(args.interval),
                            "--window", str(args.window), "--warmup", str(args.warmup),
                        ]  # fmt: skip
                        result = run_worker("bench.probe_cpu", worker_args, WORKER_TIMEOUT)
                    result["per_probe"] = result["cpu"] / max(result["probes"], 1)
                    results[variant].append(result)
                    print(
                        f"round {round_index + 1}/{args.rounds} {variant:<15} "
                        f"{result['per_probe'] * 1e6:6.1f} µs/probe  {result['probes']:6d} probes "
                        f"in {result['elapsed']:.1f}s  failures {result['failures']}  "
                        f"nginx accepts {result['accepted']}  "
                        f"machine busy {result['machine_busy'] / result['elapsed']:.2f} cores",
                        file=sys.stderr,
                    )
        finally:
            if exporter is not None:
                exporter.stop()
    return results


def pairwise(results: dict[str, list[dict[str, Any]]], a: str, b: str) -> list[float]:
    return [
        x["per_probe"] / y["per_probe"]
        for x, y in zip(results.get(a, []), results.get(b, []), strict=False)
    ]


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def per_probe(variant: str) -> list[float]:
        return [r["per_probe"] for r in results.get(variant, [])]

    def median_of(values: list[float]) -> float:
        return sorted(values)[len(values) // 2] if values else float("nan")

    rows: list[tuple[str, str, str, str]] = []
    for loop in LOOPS:
        if per_probe(f"floor-{loop}"):
            rows.append(
                (
                    f"bare aiohttp, new connection each ({loop}): CPU/probe",
                    spread(per_probe(f"floor-{loop}"), " µs", 1e6),
                    f"reference {REF_FLOOR[loop] * 1e6:.0f} µs (anchor B{LOOPS.index(loop) + 1})",
                    "info",
                )
            )
    if per_probe("blackbox"):
        rows.append(
            (
                "blackbox exporter /probe http_2xx: CPU/probe",
                spread(per_probe("blackbox"), " µs", 1e6),
                f"reference {REF_BLACKBOX * 1e6:.0f} µs (anchor A1)",
                "info",
            )
        )
    for loop in LOOPS:
        variant = f"daemon-{loop}"
        if not per_probe(variant):
            continue
        floor = median_of(per_probe(f"floor-{loop}"))
        goal = f"≤ {GOAL_RATIO:g} × floor = {GOAL_RATIO * floor * 1e6:.0f} µs" if floor == floor else ""
        rows.append(
            (
                f"daemon ({loop}): CPU/probe",
                spread(per_probe(variant), " µs", 1e6),
                goal,
                verdict(median_of(per_probe(variant)), GOAL_RATIO * floor),
            )
        )
        ratio = pairwise(results, variant, f"floor-{loop}")
        if ratio:
            rows.append(
                (
                    f"daemon ÷ bare aiohttp ({loop})",
                    spread(ratio, "×", digits=2),
                    f"≤ {GOAL_RATIO:.2f}×",
                    verdict(median_of(ratio), GOAL_RATIO),
                )
            )
        ratio = pairwise(results, variant, "blackbox")
        if ratio:
            rows.append(
                (
                    f"daemon ({loop}) ÷ blackbox exporter",
                    spread(ratio, "×", digits=2),
                    "< 1.00×",
                    verdict(median_of(ratio), 0.999),
                )
            )
    for kind in ("floor", "daemon"):
        ratio = pairwise(results, f"{kind}-uvloop", f"{kind}-asyncio")
        if ratio:
            rows.append(
                (
                    f"{kind}: uvloop ÷ asyncio",
                    spread(ratio, "×", digits=2),
                    "anchor B2: 0.81× (bare aiohttp)",
                    "info",
                )
            )
    for variant, runs in results.items():
        if not runs:
            continue
        rates = [r["probes"] / r["elapsed"] for r in runs]
        nominal = runs[0].get("scheduled_rate")
        if variant == "blackbox":
            reference = f"anchor A2: {REF_BLACKBOX_RATE:,}/s (contended)"
        elif nominal:
            reference = f"scheduled {nominal:,.0f}/s"
        else:
            reference = "unthrottled, 50 in flight"
        rows.append((f"{variant}: probes/s", spread(rates, "/s"), reference, "info"))
        busy = [r["machine_busy"] / r["elapsed"] for r in runs]
        own = [r["cpu"] / r["elapsed"] for r in runs]
        rows.append(
            (
                f"{variant}: own CPU; machine busy (all processes)",
                f"{spread(own, digits=2)}; {spread(busy, digits=2)} cores",
                "of 2 cores",
                "info",
            )
        )
    for variant, runs in results.items():
        accepted = [r["accepted"] / r["probes"] for r in runs if r["accepted"] and r["probes"]]
        failures = sum(r["failures"] for r in runs)
        if accepted:
            rows.append(
                (
                    f"{variant}: nginx connections per probe; failures",
                    f"{spread(accepted, digits=3)}; {failures}",
                    "1.000; 0",
                    "info",
                )
            )
        rows.append(
            (f"{variant}: peak RSS", spread([r["rss_mib"] for r in runs], " MiB"), "", "info")
        )
    print_table(
        f"Goal 1: CPU per HTTP probe, median (min–max) over {args.rounds} rounds "
        f"(daemon: {args.targets} targets every {args.interval:g} s, {args.window:g} s window)",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants",
        default="floor-asyncio,floor-uvloop,daemon-asyncio,daemon-uvloop,blackbox",
        help="comma-separated subset, in round-1 order",
    )
    parser.add_argument("--targets", type=int, default=1000, help="daemon: number of targets")
    parser.add_argument("--interval", type=float, default=1.0, help="daemon: seconds between probes")
    parser.add_argument("--window", type=float, default=10.0, help="daemon: measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="daemon: warm-up seconds")
    parser.add_argument("--probes", type=int, default=15000, help="floor: measured GETs")
    parser.add_argument("--conc", type=int, default=50, help="floor and wrk: in flight")
    parser.add_argument("--bb-seconds", type=float, default=6.0, help="blackbox: wrk duration")
    parser.add_argument("--server", choices=("auto", "nginx", "aiohttp"), default="auto")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    # worker mode (one variant in this process)
    parser.add_argument("--worker", choices=("floor", "daemon"), help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "floor":
        result = run_loop(lambda: floor_worker(args.port, args.probes, args.conc, 500), args.loop)
    elif args.worker == "daemon":
        result = run_loop(
            lambda: daemon_worker(args.port, args.targets, args.interval, args.window, args.warmup),
            args.loop,
        )
    else:
        results = run_rounds(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        report(results, args)
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
