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
import math
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    LOOPS,
    DaemonProbe,
    Meter,
    TargetServer,
    find_tool,
    free_port,
    nginx_accepted,
    print_table,
    proc_cpu,
    proc_memory,
    quiet_shutdown,
    run_loop,
    run_worker,
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
        with Meter() as meter:
            await batch(probes)
        after = nginx_accepted(port)
    return {
        "probes": probes,
        "failures": failures,
        **meter.as_dict(),
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory()["VmHWM"],
    }


def _http_targets(port: int, count: int) -> list[tuple[Any, Any]]:
    """(Target, http Options) pairs shaped like the daemon's, for the decomposition variants."""
    from checks import check_types
    from monitor.probe import Target

    options = check_types()["http"].options
    return [
        (
            Target(f"c{i:05d}", "web", "ok", "http"),
            options.model_validate({"url": f"http://127.0.0.1:{port}/ok?c=c{i:05d}"}),
        )
        for i in range(1, count + 1)
    ]


async def plugin_worker(port: int, probes: int, conc: int, warmup: int) -> dict[str, Any]:
    """The daemon's http check through run_probe and the daemon's session, ``conc`` in flight."""
    from checks import check_types
    from monitor.probe import ProbeContext
    from monitor.runner import new_http_session, run_probe

    http = check_types()["http"]
    targets = _http_targets(port, 1000)
    failures = 0
    session = new_http_session()
    ctx = ProbeContext(http=session, timeout=5.0)
    try:

        async def batch(count: int) -> None:
            left = [count]

            async def worker() -> None:
                nonlocal failures
                while left[0] > 0:
                    left[0] -= 1
                    target, options = targets[left[0] % len(targets)]
                    result = await run_probe(http, target, options, ctx)
                    failures += not result.success

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), 120)

        await batch(warmup)
        failures = 0
        accepted = nginx_accepted(port)
        with Meter() as meter:
            await batch(probes)
        after = nginx_accepted(port)
    finally:
        await session.close()
    return {
        "probes": probes,
        "failures": failures,
        **meter.as_dict(),
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory()["VmHWM"],
    }


async def paced_worker(
    port: int, targets: int, interval: float, window: float, warmup: float, quantum: float = 0.0
) -> dict[str, Any]:
    """The same probes at the daemon's pace: one ``loop.call_at`` per target, no APScheduler,
    no status or metrics (a minimal scheduler, as anchor C2)."""
    from checks import check_types
    from monitor.probe import ProbeContext
    from monitor.runner import new_http_session, run_probe

    http = check_types()["http"]
    pairs = _http_targets(port, targets)
    loop = asyncio.get_running_loop()
    session = new_http_session()
    ctx = ProbeContext(http=session, timeout=5.0)
    counts = {"completed": 0, "failed": 0}
    running: set[asyncio.Task[None]] = set()
    stop_at = loop.time() + warmup + window + 5

    async def run(index: int) -> None:
        target, options = pairs[index]
        result = await run_probe(http, target, options, ctx)
        counts["completed"] += 1
        counts["failed"] += not result.success

    def fire(index: int, due: float) -> None:
        if due + interval < stop_at:
            loop.call_at(due + interval, fire, index, due + interval)
        task = loop.create_task(run(index))
        running.add(task)
        task.add_done_callback(running.discard)

    start = loop.time() + 0.1
    for index in range(targets):
        due = index * interval / targets
        if quantum:  # start times on a grid of `quantum` s: several probes per wake-up
            due = math.ceil(due / quantum) * quantum
        loop.call_at(start + due, fire, index, start + due)
    try:
        await asyncio.sleep(warmup)
        accepted = nginx_accepted(port)
        completed, failed = counts["completed"], counts["failed"]
        with Meter() as meter:
            await asyncio.sleep(window)
        completed, failed = counts["completed"] - completed, counts["failed"] - failed
        after = nginx_accepted(port)
        await asyncio.wait_for(asyncio.sleep(max(0.0, stop_at - loop.time())), 30)
        if running:
            await asyncio.wait(running, timeout=10)
    finally:
        await session.close()
    return {
        "probes": completed,
        "failures": failed,
        **meter.as_dict(),
        "scheduled_rate": targets / interval,
        "accepted": None if accepted is None or after is None else after - accepted - 1,
        "rss_mib": proc_memory()["VmHWM"],
    }


async def daemon_worker(
    port: int, targets: int, interval: float, window: float, warmup: float
) -> dict[str, Any]:
    """A real Daemon probing ``targets`` targets every ``interval`` s, measured over ``window``
    once every target has been probed and the first status changes have been taken in."""
    from monitor.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="bench-probe-cpu-") as tmp:
        config = write_config(
            Path(tmp) / "config.yaml", targets=targets, port=port, interval=interval
        )
        daemon = Daemon(config, env={}, listen="127.0.0.1:0")
        probe = DaemonProbe(daemon)
        await daemon.start()
        try:
            # warm-up: `warmup` seconds, and every target probed at least once (60 s at most)
            await asyncio.sleep(warmup)
            for _ in range(600):
                if probe.completed >= max(targets, 500):
                    break
                await asyncio.sleep(0.1)
            # every subscription went unknown -> up once: let alerting take those in first
            drain = getattr(getattr(daemon, "alerting", None), "drain", None)
            if drain is not None:
                await asyncio.wait_for(drain(), 120)
            accepted = nginx_accepted(port)
            completed, failed = probe.completed, probe.failed
            with Meter() as meter:
                await asyncio.sleep(window)
            completed, failed = probe.completed - completed, probe.failed - failed
            after = nginx_accepted(port)
        finally:
            quiet_shutdown()
            await daemon.close()
            await asyncio.sleep(0.1)
    return {
        "probes": completed,
        "failures": failed,
        **meter.as_dict(),
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
    cpu, system = proc_cpu(exporter.proc.pid), proc_cpu(exporter.proc.pid, system_only=True)
    with Meter() as meter:
        probes, bad = wrk(exporter.probe_url(server.url), seconds, conc)
    cpu = proc_cpu(exporter.proc.pid) - cpu
    system = proc_cpu(exporter.proc.pid, system_only=True) - system
    after = server.accepted()
    return {
        "probes": probes,
        "failures": bad,
        **meter.as_dict(),
        "cpu": cpu,  # the exporter's, not this process's
        "sys": system,
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
    if args.explain:
        variants += [f"{kind}-{loop}" for kind in ("plugin", "paced", "batched") for loop in LOOPS]
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
                            "--quantum", str(args.quantum),
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
        goal = (
            f"≤ {GOAL_RATIO:g} × floor = {GOAL_RATIO * floor * 1e6:.0f} µs"
            if floor == floor
            else ""
        )
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
    steps = (
        ("floor", "plugin", "http check + run_probe + daemon's session (tracing)"),
        ("plugin", "paced", "paced like the daemon, minimal call_at scheduler"),
        ("paced", "daemon", "APScheduler + status + metrics (the rest of the daemon)"),
        ("paced", "batched", f"start times on a {args.quantum * 1000:g} ms grid instead"),
    )
    for loop in LOOPS:
        for before, after, what in steps:
            a, b = f"{before}-{loop}", f"{after}-{loop}"
            extra = [
                x["per_probe"] - y["per_probe"]
                for x, y in zip(results.get(b, []), results.get(a, []), strict=False)
            ]
            ratio = pairwise(results, b, a)
            if extra:
                rows.append(
                    (
                        f"step {before} → {after} ({loop}): {what}",
                        f"{spread(extra, ' µs', 1e6)}; {spread(ratio, '×', digits=2)}",
                        "µs added per probe; ratio",
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
        system = [r["sys"] / r["cpu"] for r in runs if r["cpu"]]
        rows.append(
            (
                f"{variant}: own CPU, sys share; machine busy (all processes)",
                f"{spread(own, digits=2)} cores, {spread(system, ' %', 100)}; "
                f"{spread(busy, digits=2)} cores",
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
    parser.add_argument(
        "--explain",
        action="store_true",
        help="add plugin-* (the http check via run_probe, 50 in flight) and paced-* (the same at "
        "the daemon's pace, no APScheduler) to split the daemon's cost into steps",
    )
    parser.add_argument(
        "--quantum",
        type=float,
        default=0.05,
        help="batched-*: start times rounded up to multiples of this many seconds",
    )
    parser.add_argument("--targets", type=int, default=1000, help="daemon: number of targets")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="daemon: seconds between probes"
    )
    parser.add_argument("--window", type=float, default=10.0, help="daemon: measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="daemon: warm-up seconds")
    parser.add_argument("--probes", type=int, default=15000, help="floor: measured GETs")
    parser.add_argument("--conc", type=int, default=50, help="floor and wrk: in flight")
    parser.add_argument("--bb-seconds", type=float, default=6.0, help="blackbox: wrk duration")
    parser.add_argument("--server", choices=("auto", "nginx", "aiohttp"), default="auto")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    # worker mode (one variant in this process)
    parser.add_argument(
        "--worker",
        choices=("floor", "plugin", "paced", "batched", "daemon"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "floor":
        result = run_loop(lambda: floor_worker(args.port, args.probes, args.conc, 500), args.loop)
    elif args.worker == "plugin":
        result = run_loop(lambda: plugin_worker(args.port, args.probes, args.conc, 500), args.loop)
    elif args.worker in ("paced", "batched"):
        quantum = args.quantum if args.worker == "batched" else 0.0
        result = run_loop(
            lambda: paced_worker(
                args.port, args.targets, args.interval, args.window, args.warmup, quantum
            ),
            args.loop,
        )
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
