"""The stack tests/test_prometheus.py runs once: local services, the daemon probing them,
and the real `prometheus` binary scraping it with the shipped scrape config's
relabelling (the blackbox recipe), evaluating the project's rules every second.

The scenario (see the test module's docstring) provokes every alert and gives every
panel something to show; `Check`/`wait_for_data` run expressions until they return
data or the stack's single deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
import yaml
from aiohttp import web

from monitor.daemon import Daemon
from tests.conftest import unused_port
from tests.test_check_dns import UdpResponder
from tests.test_grafana import selectors

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
# The rules a single daemon can provoke; the cluster's are run live against three nodes
# in tests/test_cluster_failover.py.
CLUSTER_RULES = PROMETHEUS_DIR / "rules" / "cluster.alerts.yml"
SINGLE_NODE_RULE_FILES = [path for path in RULE_FILES if path != CLUSTER_RULES]
WAIT_FOR_DATA = 40.0  # seconds the stack gets until every expression returns data

T = TypeVar("T")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: install the Debian package prometheus (.ci/test does)",
            pytrace=False,
        )
    return path


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(args[0]), *args[1:]], capture_output=True, text=True, check=False, cwd=ROOT
    )


SHORT_CERT_DAYS = 10  # inside every community "expires soon" alert's window
LONG_CERT_DAYS = 90  # outside all of them


def server_context(ca: trustme.CA, days: int) -> ssl.SSLContext:
    leaf = ca.issue_cert("127.0.0.1", not_after=datetime.now(UTC) + timedelta(days=days))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


class Services:
    """Local HTTPS endpoints the daemon probes (one certificate expiring soon, one not), a
    DNS server, and a flaky /metrics for Prometheus."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        self.ssl = server_context(ca, SHORT_CERT_DAYS)
        self.long_ssl = server_context(ca, LONG_CERT_DAYS)
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.scrapes = 0
        self.https_port = 0
        self.long_port = 0
        self.flaky_port = 0
        self.dns_port = 0
        self._runners: list[web.AppRunner] = []
        self._dns: asyncio.BaseTransport | None = None

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="healthy")

    async def _fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal error")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.45)
        return web.Response(text="healthy")

    async def _flaky_metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.scrapes % 2:
            return web.Response(status=503, text="overloaded")
        # ... and is blind (its canaries fail): CspMonitorBlind
        return web.Response(
            text="# a replica that answers every other scrape\n"
            "# TYPE csp_monitor_blind gauge\ncsp_monitor_blind 1\n"
        )

    async def _serve(self, app: web.Application, context: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self._runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ok", self._ok)
        app.router.add_get("/fail", self._fail)
        app.router.add_get("/slow", self._slow)
        self.https_port = await self._serve(app, self.ssl)
        self.long_port = await self._serve(app, self.long_ssl)
        self._dns, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            UdpResponder, local_addr=("127.0.0.1", 0)
        )
        self.dns_port = int(self._dns.get_extra_info("sockname")[1])
        flaky = web.Application()
        flaky.router.add_get("/metrics", self._flaky_metrics)
        self.flaky_port = await self._serve(flaky, None)

    async def stop(self) -> None:
        if self._dns is not None:
            self._dns.close()
        for runner in self._runners:
            await runner.cleanup()


def write_daemon_config(path: Path, services: Services, listen_port: int, gone_port: int) -> None:
    base = f"https://127.0.0.1:{services.https_port}"
    ca = services.ca_file
    short, long = services.https_port, services.long_port
    customers = (
        # id, tier, what its sharepoint and portal answer, its exchange's certificate, extras
        ("contoso", "gold", "fail", "slow", short, ""),
        ("fabrikam", "silver", "fail", "ok", short, ""),
        ("woodgrove", "silver", "ok", "ok", long, ", edge"),  # tcp, tls and dns checks
    )
    entries = "\n".join(
        f"  - {{id: {c}, name: {c.title()} (China) Ltd., tenant_domain: {c}.partner.onmschina.cn, "
        f"tier: {tier}, vars: {{sharepoint: {sharepoint}, portal: {portal}, "
        f"exchange_port: '{port}'}}, "
        f"subscriptions: [exchange-online, sharepoint, portal{extra}]}}"
        for c, tier, sharepoint, portal, port, extra in customers
    )
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:{listen_port}
  public_url: http://127.0.0.1:{listen_port}
  shutdown_grace: 1s
defaults: {{interval: 300ms, retry_interval: 100ms, timeout: 1s, failure_threshold: 2,
           success_threshold: 2}}
tiers:
  gold: {{sla_target: 99.95}}
  silver: {{sla_target: 99.9}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  cooldown: 100ms
  escalate_after: 2s
  correlation: {{enabled: false}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [outbox, pager]}}
    repeat_interval: 1s
notifications:
  poll_interval: 100ms
  retry: {{initial: 100ms, max_delay: 200ms, max_attempts: 2}}
channels:
  outbox: {{type: file, directory: outbox}}
  pager: {{type: webhook, url: "http://127.0.0.1:{gone_port}/page", timeout: 1}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks:
      - {{name: owa, type: http, url: "https://127.0.0.1:{{customer.exchange_port}}/ok?c={{customer.id}}",
         ca_file: "{ca}",
         body_regex: healthy}}
  sharepoint:
    name: SharePoint Online (operated by 21Vianet)
    checks:
      - {{name: site, type: http, url: "{base}/{{customer.sharepoint}}?c={{customer.id}}",
         ca_file: "{ca}"}}
  portal:
    name: Customer portal
    checks:
      - {{name: home, type: http, url: "{base}/{{customer.portal}}?c={{customer.id}}",
         ca_file: "{ca}", degraded_latency: 200ms}}
  edge:
    name: Customer edge (network checks)
    checks:
      - {{name: page, type: http, url: "https://127.0.0.1:{long}/ok", ca_file: "{ca}"}}
      - {{name: port, type: tcp, host: 127.0.0.1, port: {short}}}
      - {{name: ping, type: icmp, host: 127.0.0.1, interval: 50ms}}
      - {{name: cert, type: tls, host: 127.0.0.1, port: {long}, ca_file: "{ca}"}}
      - {{name: dns, type: dns, query: portal.example.cn, resolver: "127.0.0.1:{services.dns_port}",
         expect: ["42.159.0.1"]}}
customers:
{entries}
""")


def write_second_daemon_config(path: Path, services: Services) -> None:
    """A second daemon in the same job, probing one target the first probes too (as nodes
    at two locations would): with the recipe, both its series share the target's
    `instance` and differ by `monitor_instance`."""
    path.write_text(f"""
monitor: {{listen: 127.0.0.1:0, shutdown_grace: 1s}}
defaults: {{interval: 300ms, timeout: 1s}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks:
      - {{name: owa, type: http, url: "https://127.0.0.1:{services.long_port}/ok?c=woodgrove",
         ca_file: "{services.ca_file}", body_regex: healthy}}
customers:
  - {{id: woodgrove, name: Woodgrove, tenant_domain: woodgrove.partner.onmschina.cn,
     subscriptions: [exchange-online]}}
""")


class Loop:
    """An event loop in a thread: the daemon and the local services run there for the module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stack", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: the expression is wrong
            return json.loads(exc.read())

    def query(self, expr: str, instant: bool = True) -> tuple[list[Any], str | None]:
        """(result, error) of an instant query, or of a range query over the last 30 s."""
        if instant:
            answer = self.get("/api/v1/query", query=expr)
        else:
            now = time.time()
            answer = self.get("/api/v1/query_range", query=expr, start=now - 30, end=now, step=1)
        if answer.get("status") != "success":
            return [], f"{answer.get('errorType')}: {answer.get('error')}"
        return list(answer["data"]["result"]), None

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params: dict[str, Any] = {"start": time.time() - 300}
        if selector:
            params["match[]"] = selector
        answer = self.get(f"/api/v1/label/{label}/values", **params)
        assert answer.get("status") == "success", answer
        return list(answer["data"])


def shipped_relabelling() -> list[dict[str, Any]]:
    """The csp-monitor job's metric_relabel_configs in prometheus/prometheus.yml: the recipe."""
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = [job for job in shipped["scrape_configs"] if job["job_name"] == "csp-monitor"]
    return list(job.get("metric_relabel_configs", []))


def sampled_every_second(expr: str) -> str:
    """``expr`` with its windows sampled every minute (subqueries ``[W:1m]``) sampled
    every second: a minute-step subquery has no value until a minute boundary passes
    after the first scrape, so a test that starts on the wrong second waits a minute."""
    return expr.replace(":1m])", ":1s])")


def start_prometheus(
    tmp: Path,
    targets: list[str],
    recipe: bool = True,
    rule_files: Sequence[Path] = SINGLE_NODE_RULE_FILES,
) -> Prometheus:
    """The real prometheus binary: 1 s scrapes with the shipped relabelling (unless
    ``recipe`` is false: how it was before the recipe), the project's rules (those of
    ``rule_files``) every second."""
    job: dict[str, Any] = {"job_name": "csp-monitor", "static_configs": [{"targets": targets}]}
    if recipe:
        job["metric_relabel_configs"] = shipped_relabelling()
    rules = tmp / "rules"
    rules.mkdir()
    for path in rule_files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            group.pop("interval", None)  # every group every second here
            for rule in group["rules"]:
                rule["expr"] = sampled_every_second(rule["expr"])
        (rules / path.name).write_text(yaml.safe_dump(document), encoding="utf-8")
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules / "*.yml")],
                "scrape_configs": [job],
            }
        ),
        encoding="utf-8",
    )
    port = unused_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log.read_text()}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return prometheus
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()  # reaped: not left running (and warned about) once the test has failed
    pytest.fail(f"prometheus did not become ready: {log.read_text()}", pytrace=False)


@dataclass
class Check:
    """One expression to run, and what it returned the last time."""

    where: str
    expr: str
    instant: bool = True
    error: str | None = None
    series: int = 0

    def describe(self) -> str:
        what = self.error or "returned nothing"
        return f"{self.where}: {what}\n    {' '.join(self.expr.split())}"


@dataclass
class Stack:
    prometheus: Prometheus
    daemon: Daemon
    deadline: float  # time.monotonic() by which every expression should return data
    loop: Loop
    daemon_address: str  # host:port Prometheus scrapes it at
    services: Services
    second_address: str  # a second daemon, probing one of the same targets


@contextlib.contextmanager
def open_stack(tmp: Path, recipe: bool = True) -> Iterator[Stack]:
    """Services, the daemon and Prometheus, until the block ends (undone whatever failed)."""
    with contextlib.ExitStack() as cleanup:  # undone in reverse, whatever failed
        loop = Loop()
        cleanup.callback(loop.close)
        services = Services(tmp)
        loop.run(services.start())
        cleanup.callback(lambda: loop.run(services.stop()))
        ports = [unused_port() for _ in range(4)]
        daemon_port, second_port, replica_down_port, webhook_gone_port = ports
        config = tmp / "config.yaml"
        write_daemon_config(config, services, daemon_port, webhook_gone_port)
        (tmp / "second").mkdir()
        second_config = tmp / "second" / "config.yaml"
        write_second_daemon_config(second_config, services)
        # Prometheus first, so it sees the daemon's counters from their first value.
        address, second_address = f"127.0.0.1:{daemon_port}", f"127.0.0.1:{second_port}"
        prometheus = start_prometheus(
            tmp,
            [
                address,
                second_address,
                f"127.0.0.1:{services.flaky_port}",
                f"127.0.0.1:{replica_down_port}",
            ],
            recipe,
        )
        cleanup.callback(prometheus.stop)
        daemon = Daemon(config, listen=address)
        loop.run(daemon.start())
        cleanup.callback(lambda: loop.run(daemon.close()))
        second = Daemon(second_config, listen=second_address)
        loop.run(second.start())
        cleanup.callback(lambda: loop.run(second.close()))
        # an operator saves a broken file and reloads: refused, the old config runs on
        config.write_text("monitor: [this is not a mapping\n")
        accepted, _ = loop.run(daemon.reload())
        assert not accepted
        yield Stack(
            prometheus,
            daemon,
            time.monotonic() + WAIT_FOR_DATA,
            loop,
            address,
            services,
            second_address,
        )


def wait_for_data(stack: Stack, checks: list[Check]) -> list[Check]:
    """Run every check until each returns data or the stack's time is up (one deadline
    for the module, so a missing metric costs the wait once); the ones that did not."""
    pending = list(checks)
    while True:
        for check in pending:
            result, check.error = stack.prometheus.query(check.expr, check.instant)
            check.series = len(result)
        pending = [check for check in pending if check.error or not check.series]
        if not pending or time.monotonic() > stack.deadline:
            return pending
        time.sleep(1.0)


def with_selectors(checks: list[Check]) -> list[Check]:
    """The checks, and each vector selector in them on its own: an expression can return
    data while one of its parts selects nothing (a misspelt metric in an `or` branch)."""
    seen = {check.expr for check in checks}
    parts = []
    for check in checks:
        for selector in selectors(check.expr):
            if selector not in seen:
                seen.add(selector)
                parts.append(Check(f"{check.where}: selector {selector}", selector))
    return checks + parts


def report(failed: list[Check], total: int) -> str:
    return f"{len(failed)} of {total} expressions failed or returned nothing:\n" + "\n".join(
        check.describe() for check in failed
    )
