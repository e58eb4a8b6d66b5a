"""Shared parts of the benchmarks.

* tools: finds nginx, wrk and prometheus-blackbox-exporter, installing the Debian
  packages with apt-get when they are missing and we are root;
* ``TargetServer``: the monitored service, ``GET /ok`` -> ``200 "ok\\n"`` on a free
  127.0.0.1 port, served by a separate process (nginx with one worker, or an aiohttp
  process when nginx cannot be had);
* ``write_config``: a daemon config with N customers, one http check each;
* ``DaemonProbe``: counts the probes a running ``Daemon`` completes and records the
  scheduler's lag for each run, by wrapping two of its methods (bench-only);
* accounting (``self_cpu``, ``proc_cpu``, ``proc_memory``), statistics and tables;
* ``run_worker``: runs one variant as its own process and reads back its JSON.

Everything here talks to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from monitor.catalog import TargetSpec
    from monitor.daemon import Daemon
    from monitor.probe import ProbeResult

REPO = Path(__file__).resolve().parents[1]
LOOPS = ("asyncio", "uvloop")
T = TypeVar("T")

# ---------------------------------------------------------------------- tools

DEBIAN_PACKAGES = {
    "nginx": "nginx-light",
    "wrk": "wrk",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}


def find_tool(name: str, install: bool = True) -> str | None:
    """Path of ``name``; installs its Debian package first when missing (root only)."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    package = DEBIAN_PACKAGES.get(name)
    if not install or package is None or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print(f"bench: installing Debian package {package} (for {name})", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and command[1] == "install":
            print(f"bench: cannot install {package}: {done.stderr.strip()[-500:]}", file=sys.stderr)
            return None
    return find_tool(name, install=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0
) -> None:
    """Stop one process we started, by its PID; kill it if it does not go in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# ---------------------------------------------------------------------- target server

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /ok {{ default_type text/plain; return 200 "ok\\n"; }}
        location = /nginx_status {{ stub_status; }}
    }}
}}
"""


class TargetServer:
    """The monitored service, in a process of its own: nginx, or aiohttp as a fallback."""

    def __init__(self, kind: str = "auto") -> None:
        self.kind = kind
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> TargetServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ok"

    def start(self) -> None:
        self.port = free_port()
        nginx = find_tool("nginx") if self.kind in ("auto", "nginx") else None
        if nginx is None and self.kind == "nginx":
            raise RuntimeError("nginx is not installed and cannot be installed")
        if nginx is not None:
            self.kind = "nginx"
            self._dir = tempfile.TemporaryDirectory(prefix="bench-nginx-")
            conf = Path(self._dir.name) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=self._dir.name, port=self.port))
            command = [
                nginx,
                "-c",
                str(conf),
                "-p",
                self._dir.name,
                "-e",
                f"{self._dir.name}/e.log",
            ]
        else:
            self.kind = "aiohttp"
            command = [sys.executable, "-m", "bench.common", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            # nginx: SIGQUIT is a graceful stop of master and worker
            stop_process(self.proc, signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def accepted(self) -> int | None:
        """Connections nginx accepted so far (stub_status), or None for the fallback."""
        return nginx_accepted(self.port) if self.kind == "nginx" else None


def nginx_accepted(port: int) -> int | None:
    """nginx stub_status "accepts" on ``port`` (this request itself adds one)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/nginx_status", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    lines = text.splitlines()
    return int(lines[2].split()[0]) if len(lines) > 2 else None


def serve_aiohttp(port: int) -> None:
    """The fallback target: one aiohttp process (SO_REUSEPORT) answering ``ok``."""
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/ok", ok)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None)


# ---------------------------------------------------------------------- config


def _duration(seconds: float) -> str:
    # whole seconds as such: "%g" writes 3,600,000 ms as 3.6e+06, which is no duration
    return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds * 1000:g}ms"


def write_config(
    path: Path,
    *,
    targets: int,
    port: int,
    interval: float,
    retry_interval: float | None = None,
    timeout: float = 5.0,
    max_concurrency: int = 512,
    monitor: Sequence[str] = (),
    defaults: Sequence[str] = (),
) -> Path:
    """A config with ``targets`` customers (c00001…), each subscribing to one http check;
    ``monitor`` and ``defaults``: more lines of those sections (indented by two)."""
    lines = [
        "monitor:",
        "  listen: 127.0.0.1:0",
        f"  max_concurrency: {max_concurrency}",
        "  shutdown_grace: 2s",
        "  log_level: warning",
        *monitor,
        "defaults:",
        f"  interval: {_duration(interval)}",
        f"  retry_interval: {_duration(retry_interval or interval)}",
        f"  timeout: {_duration(timeout)}",
        "  failure_threshold: 3",
        "  success_threshold: 2",
        *defaults,
        "services:",
        "  web:",
        "    name: Customer web app",
        "    checks:",
        "      - name: ok",
        "        type: http",
        f'        url: "http://127.0.0.1:{port}/ok?c={{customer.id}}"',
        "customers:",
    ]
    lines += [
        f"  - {{id: c{i:05d}, name: Customer {i}, tenant_domain: c{i:05d}.partner.onmschina.cn, "
        "subscriptions: [web]}"
        for i in range(1, targets + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- daemon harness


class DaemonProbe:
    """Counts what a running Daemon does, by wrapping ``handle_result`` and ``scheduler.lag``.

    ``handle_result`` runs once per completed probe (after evaluation, before the
    metrics update returns); ``scheduler.lag`` once per job start, with the value the
    daemon's own lag histogram observes. Per-target counts and raw lags are kept
    only when ``detail`` is set (compact arrays: ~1 MB per 100k runs).
    """

    def __init__(self, daemon: Daemon, detail: bool = False) -> None:
        self.daemon = daemon
        self.detail = detail
        self.completed = 0
        self.failed = 0
        self.started = 0
        self.lags = array("d")
        self.lag_times = array("d")  # wall time of each run's start, beside its lag
        self.runs: dict[str, int] = {}
        self.first_due: dict[str, float] = {}
        self.failed_targets: set[str] = set()
        handle_result = daemon.handle_result
        lag = daemon.scheduler.lag

        def counting_handle_result(spec: TargetSpec, result: ProbeResult) -> None:
            self.completed += 1
            if not result.success:
                self.failed += 1
                if detail:
                    self.failed_targets.add(spec.target.id)
            handle_result(spec, result)

        def recording_lag(target_id: str, now: float) -> float:
            value = lag(target_id, now)
            self.started += 1
            if detail:
                self.lags.append(value)
                self.lag_times.append(now)
                runs = self.runs.get(target_id, 0)
                if runs == 0:
                    self.first_due[target_id] = now - value
                self.runs[target_id] = runs + 1
            return value

        daemon.handle_result = counting_handle_result  # type: ignore[method-assign]
        daemon.scheduler.lag = recording_lag  # type: ignore[method-assign]


class GcWatch:
    """Garbage-collector pauses, by generation (count, total, max), via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.full: list[tuple[float, float]] = []  # (wall time at end, pause) of each gen-2 run
        self._started = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause, generation = time.perf_counter() - self._started, info["generation"]
        self.count[generation] += 1
        self.total[generation] += pause
        self.longest[generation] = max(self.longest[generation], pause)
        if generation == 2 and len(self.full) < 10_000:
            self.full.append((time.time(), pause))

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "longest": self.longest}


def quiet_shutdown() -> None:
    """Silence APScheduler's executor log before ``Daemon.close()``.

    ``close()`` shuts APScheduler down first, and its AsyncIOExecutor cancels every
    job still running, each logged with a CancelledError traceback (see README, "Found").
    The measurements are over by then; this keeps the benchmark's output readable.
    """
    logging.getLogger("apscheduler.executors.default").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------- accounting


def self_cpu() -> float:
    """User + system CPU seconds of this process (getrusage RUSAGE_SELF)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int, system_only: bool = False) -> float:
    """utime + stime (or stime alone) of a process, all threads, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[12]) + (0 if system_only else int(fields[11]))
    return ticks / os.sysconf("SC_CLK_TCK")


class Meter:
    """Over one phase: this process's CPU (user+sys, and sys alone), wall time, and the
    CPU time of the whole machine (to see what else was running)."""

    def __init__(self) -> None:
        self.cpu = self.sys = self.elapsed = self.machine_busy = 0.0

    def __enter__(self) -> Meter:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._start = (usage.ru_utime, usage.ru_stime, time.perf_counter(), machine_busy())
        return self

    def __exit__(self, *_: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        user, system, wall, busy = self._start
        self.sys = usage.ru_stime - system
        self.cpu = usage.ru_utime - user + self.sys
        self.elapsed = time.perf_counter() - wall
        self.machine_busy = machine_busy() - busy

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu": self.cpu,
            "sys": self.sys,
            "elapsed": self.elapsed,
            "machine_busy": self.machine_busy,
        }


def machine_busy() -> float:
    """CPU seconds all processes on the machine have used (busy = not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM in MiB, from /proc/PID/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def run_loop(main: Callable[[], Awaitable[T]], loop: str) -> T:
    """Run ``main()`` on the default asyncio loop or on uvloop (as the CLI would)."""
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    else:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def spread(values: Iterable[float], unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    """``median (min–max)`` of ``values`` times ``scale``."""
    data = [v * scale for v in values]
    if not data:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    med, low, high = statistics.median(data), min(data), max(data)
    if len(data) == 1:
        return f"{fmt.format(med)}{unit}"
    return f"{fmt.format(med)}{unit} ({fmt.format(low)}–{fmt.format(high)})"


def verdict(value: float, goal: float, lower_is_better: bool = True) -> str:
    if value != value:
        return "n/a"
    ok = value <= goal if lower_is_better else value >= goal
    return "meets" if ok else "MISSES"


def print_table(title: str, rows: Sequence[Sequence[str]]) -> None:
    header = ("figure", "measured", "reference / goal", "verdict")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    rule = "-+-".join("-" * w for w in widths)
    print(f"\n{title}\n{rule}")
    for row in [header, None, *rows]:
        if row is None:
            print(rule)
            continue
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(rule)


# ---------------------------------------------------------------------- workers


def run_worker(module: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m module args`` as its own process; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print(done.stderr.rstrip()[-2000:], file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="bench helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="the aiohttp fallback target server")
    serve.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve_aiohttp(args.port)


if __name__ == "__main__":
    main()
