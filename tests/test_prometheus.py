"""Prometheus rules and every dashboard query, against a real Prometheus scraping a real daemon.

promtool checks the example scrape config and the rules and runs the rules' unit
tests (prometheus/tests/). Then one stack runs for the whole module:

* local HTTPS services (a certificate from a test CA that expires in 20 days):
  `/ok`, `/fail` (500) and `/slow` (0.45 s, slower than the probe interval);
* the daemon probing them for three customers: sharepoint down for contoso and
  fabrikam (a service failing for several customers), contoso's portal degraded
  and too slow for its interval (skipped runs), everything else up; incidents
  open and page a file channel and a webhook whose receiver is gone (retries,
  then failures); then a reload with a broken file (refused);
* the real `prometheus` binary scraping the daemon every second, with a replica
  that is down and one whose scrapes fail every other time in the same job (and which
  is blind), and
  evaluating the rules every second.

The scenario provokes every alert on purpose, so that every expression, alerts
included, has something to return. Each expression of every rule and of every
dashboard panel (Grafana variables replaced by values Prometheus itself
resolves) must parse and return data: one that returns nothing is a broken
panel or an alert that can never fire. The tests list every such expression.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
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
from tests.test_grafana import Query, dashboards, queries, selectors, variable_query, variables

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
# The rules a single daemon can provoke; the cluster's are run live against three nodes
# in tests/test_cluster_failover.py.
CLUSTER_RULES = PROMETHEUS_DIR / "rules" / "cluster.alerts.yml"
SINGLE_NODE_RULE_FILES = [path for path in RULE_FILES if path != CLUSTER_RULES]
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))

WAIT_FOR_DATA = 40.0  # seconds the stack gets until every expression returns data
# What Grafana would put in place of its interval variables on a short time range.
GRAFANA_INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

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


def rules(files: Sequence[Path] = RULE_FILES) -> list[dict[str, Any]]:
    """Every rule of every rule file (of ``files``), with the group it belongs to."""
    found = []
    for path in files:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                found.append({**rule, "group": group["name"], "file": path.name})
    return found


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


# ------------------------------------------------------------------ promtool


@pytest.mark.parametrize("config", ["prometheus.yml", "cluster.yml"])
def test_promtool_accepts_the_example_scrape_config(config: str) -> None:
    checked = run_tool("promtool", "check", "config", f"prometheus/{config}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # it loads every rule file through rule_files
    assert f"{len(RULE_FILES)} rule files found" in checked.stdout + checked.stderr


def test_the_cluster_scrape_config_is_the_single_one_with_every_node() -> None:
    single = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    cluster = yaml.safe_load((PROMETHEUS_DIR / "cluster.yml").read_text(encoding="utf-8"))
    compose = yaml.safe_load(
        (PROMETHEUS_DIR.parent / "deploy" / "docker-compose.cluster.yml").read_text("utf-8")
    )
    nodes = sorted(name for name in compose["services"] if name.startswith("csp-monitor-"))
    [job] = [j for j in cluster["scrape_configs"] if j["job_name"] == "csp-monitor"]
    assert job["static_configs"][0]["targets"] == [f"{name}:9700" for name in nodes]
    # apart from the targets, the same: relabelling, timeouts, rules
    for document in (single, cluster):
        for scrape in document["scrape_configs"]:
            scrape.pop("static_configs")
    assert single == cluster


def test_promtool_accepts_the_rules() -> None:
    checked = run_tool("promtool", "check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    checked = run_tool("promtool", "test", "rules", *map(str, RULE_TESTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alert_names() - firing == set(), "alerts never shown firing"
    assert alert_names() - quiet == set(), "alerts never shown staying quiet"


def test_alerts_say_what_to_do() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_burn_rate_alerts_use_the_sre_workbook_windows() -> None:
    windows = {}
    for rule in rules():
        if rule.get("alert", "").startswith("CspSubscriptionErrorBudgetBurn"):
            pairs = re.findall(
                r"ratio_(?:floor|ceiling)(\w+) > "
                r"\(([\d.]+) \* \(1 - csp_monitor_sla_target_ratio\)\)",
                rule["expr"],
            )
            windows[rule["alert"]] = pairs
    assert windows == {
        "CspSubscriptionErrorBudgetBurnFast": [
            ("1h", "14.4"),
            ("5m", "14.4"),
            ("6h", "6"),
            ("30m", "6"),
        ],
        "CspSubscriptionErrorBudgetBurnSlow": [("1d", "3"), ("2h", "3"), ("3d", "1"), ("6h", "1")],
    }


# ------------------------------------------------------------------ the stack


class Services:
    """Local HTTPS endpoints the daemon probes, and a flaky /metrics for Prometheus."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", not_after=datetime.now(UTC) + timedelta(days=20))
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.ssl)
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.scrapes = 0
        self.https_port = 0
        self.flaky_port = 0
        self._runners: list[web.AppRunner] = []

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
        flaky = web.Application()
        flaky.router.add_get("/metrics", self._flaky_metrics)
        self.flaky_port = await self._serve(flaky, None)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


def write_daemon_config(path: Path, services: Services, listen_port: int, gone_port: int) -> None:
    base = f"https://127.0.0.1:{services.https_port}"
    ca = services.ca_file
    customers = (
        # id, tier, what its sharepoint and portal answer
        ("contoso", "gold", "fail", "slow"),
        ("fabrikam", "silver", "fail", "ok"),
        ("woodgrove", "silver", "ok", "ok"),
    )
    entries = "\n".join(
        f"  - {{id: {c}, name: {c.title()} (China) Ltd., tenant_domain: {c}.partner.onmschina.cn, "
        f"tier: {tier}, vars: {{sharepoint: {sharepoint}, portal: {portal}}}, "
        f"subscriptions: [exchange-online, sharepoint, portal]}}"
        for c, tier, sharepoint, portal in customers
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
      - {{name: owa, type: http, url: "{base}/ok?c={{customer.id}}", ca_file: "{ca}",
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
customers:
{entries}
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


def start_prometheus(
    tmp: Path, targets: list[str], rule_files: Sequence[Path] = SINGLE_NODE_RULE_FILES
) -> Prometheus:
    """The real prometheus binary: 1 s scrapes, the project's rules evaluated every second."""
    rules = tmp / "rules"
    rules.mkdir()
    for path in rule_files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            group.pop("interval", None)  # every group every second here
            for rule in group["rules"]:
                # windows sampled every minute (subqueries [W:1m]) every second here: on
                # minute boundaries their first value could take a minute to come
                rule["expr"] = rule["expr"].replace(":1m])", ":1s])")
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
                "scrape_configs": [
                    {"job_name": "csp-monitor", "static_configs": [{"targets": targets}]}
                ],
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with contextlib.ExitStack() as cleanup:  # undone in reverse, whatever failed
        loop = Loop()
        cleanup.callback(loop.close)
        services = Services(tmp)
        loop.run(services.start())
        cleanup.callback(lambda: loop.run(services.stop()))
        daemon_port, replica_down_port, webhook_gone_port = (unused_port() for _ in range(3))
        config = tmp / "config.yaml"
        write_daemon_config(config, services, daemon_port, webhook_gone_port)
        # Prometheus first, so it sees the daemon's counters from their first value.
        prometheus = start_prometheus(
            tmp,
            [
                f"127.0.0.1:{daemon_port}",
                f"127.0.0.1:{services.flaky_port}",
                f"127.0.0.1:{replica_down_port}",
            ],
        )
        cleanup.callback(prometheus.stop)
        daemon = Daemon(config, listen=f"127.0.0.1:{daemon_port}")
        loop.run(daemon.start())
        cleanup.callback(lambda: loop.run(daemon.close()))
        # an operator saves a broken file and reloads: refused, the old config runs on
        config.write_text("monitor: [this is not a mapping\n")
        accepted, _ = loop.run(daemon.reload())
        assert not accepted
        yield Stack(prometheus, daemon, time.monotonic() + WAIT_FOR_DATA)


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


# ------------------------------------------------------------------ rules, live


def rule_checks() -> list[Check]:
    checks = []
    for rule in rules(SINGLE_NODE_RULE_FILES):
        name = rule.get("record") or rule["alert"]
        checks.append(Check(f"{rule['file']} / {rule['group']} / {name}", rule["expr"]))
        if "record" in rule:  # and the recorded series is stored
            checks.append(Check(f"{rule['file']} / {name} (recorded series)", rule["record"]))
    return checks


def test_every_rule_expression_returns_data(stack: Stack) -> None:
    checks = with_selectors(rule_checks())
    failed = wait_for_data(stack, checks)
    assert not failed, report(failed, len(checks))


def test_every_rule_evaluates_without_error_and_every_alert_is_active(stack: Stack) -> None:
    expected = {rule.get("record") or rule["alert"] for rule in rules(SINGLE_NODE_RULE_FILES)}
    while True:  # an alert is active from the evaluation after its data arrives
        answer = stack.prometheus.get("/api/v1/rules")
        assert answer["status"] == "success"
        loaded = {
            rule["name"]: rule for group in answer["data"]["groups"] for rule in group["rules"]
        }
        assert set(loaded) == expected
        unhealthy = {
            name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"
        }
        # the scenario provokes each alert: each is pending (waiting out its `for`) or firing
        inactive = sorted(
            name
            for name, rule in loaded.items()
            if rule["type"] == "alerting" and not rule["alerts"]
        )
        if (not unhealthy and not inactive) or time.monotonic() > stack.deadline:
            break
        time.sleep(1.0)
    assert not unhealthy, unhealthy
    assert not inactive, f"alerts the scenario should have raised: {inactive}"


# ------------------------------------------------------------------ dashboards, live


VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\[\[([A-Za-z_]\w*)\]\]|\$([A-Za-z_]\w*)")


def substitute(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values.get(name, match.group(0))

    return VARIABLE.sub(value, text)


def resolve_variables(
    prometheus: Prometheus, dashboard: dict[str, Any]
) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """Each variable's values as Grafana would list them, the text Grafana would put in a
    query for its default selection, and the problems (a variable that lists nothing)."""
    listed: dict[str, list[str]] = {}
    text = dict(GRAFANA_INTERVALS)
    problems = []
    for variable in variables(dashboard):
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            continue
        if kind == "custom":
            listed[name] = [option["value"] for option in variable["options"]]
            text[name] = variable["current"]["value"]
            continue
        assert kind == "query", f"{name}: variables of type {kind} are not handled here"
        query = substitute(variable_query(variable), text)
        match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query)
        assert match, query
        values = prometheus.label_values(match.group(2), match.group(1))
        listed[name] = values
        if not values:
            problems.append(f"${name}: {query} lists nothing")
        if variable.get("includeAll") and variable.get("allValue"):
            text[name] = variable["allValue"]
        elif variable.get("multi") or variable.get("includeAll"):
            text[name] = "(" + "|".join(re.escape(value) for value in values) + ")"
        else:  # Grafana selects the first value
            text[name] = values[0] if values else ""
    return listed, text, problems


def dashboard_checks(prometheus: Prometheus) -> tuple[list[Check], list[str]]:
    checks, problems = [], []
    for name, dashboard in dashboards():
        listed, text, trouble = resolve_variables(prometheus, dashboard)
        problems += [f"{name}: {problem}" for problem in trouble]
        query: Query
        for query in queries(name, dashboard):
            # a repeated panel is drawn once per value, each with that single value
            for value in listed.get(query.repeat, [None]) if query.repeat else [None]:
                values = dict(text)
                where = str(query)
                if query.repeat and value is not None:
                    values[query.repeat] = value
                    where += f" (${query.repeat}={value})"
                expr = substitute(query.expr, values)
                assert "$" not in expr, f"{where}: unresolved variable in {expr}"
                checks.append(Check(where, expr, query.instant))
    return checks, problems


def test_every_dashboard_variable_lists_values(stack: Stack) -> None:
    # the data wait: variables list what Prometheus has seen
    wait_for_data(stack, rule_checks())
    _, problems = dashboard_checks(stack.prometheus)
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    wait_for_data(stack, rule_checks())
    checks, _ = dashboard_checks(stack.prometheus)
    assert len(checks) >= 80
    checks = with_selectors(checks)
    failed = wait_for_data(stack, checks)
    assert not failed, report(failed, len(checks))


def test_the_scenario_is_what_the_panels_are_about(stack: Stack) -> None:
    """The data the expressions found is the scenario's, not an accident."""
    prometheus = stack.prometheus
    wait_for_data(stack, rule_checks())

    def values(expr: str) -> dict[str, float]:
        result, error = prometheus.query(expr)
        assert error is None, error
        return {
            ",".join(
                f"{k}={v}" for k, v in sorted(item["metric"].items()) if k != "__name__"
            ): float(item["value"][1])
            for item in result
        }

    assert values("service:csp_monitor_customers_down:count") == {
        "job=csp-monitor,service=sharepoint": 2.0
    }
    # "Not up, and since when" takes the age of the open incidents
    opened = values("max by (customer, service) (csp_monitor_incident_opened_timestamp_seconds)")
    assert {
        "customer=contoso,service=sharepoint",
        "customer=fabrikam,service=sharepoint",
    } <= set(opened)
    degraded = values("csp_monitor_subscription_status == 2")
    assert [key for key in degraded if "customer=contoso" in key and "service=portal" in key]
    expiry = values("min(probe_ssl_earliest_cert_expiry) - time()")
    assert 19 * 86400 < expiry[""] < 20 * 86400
    assert values('min(up{job="csp-monitor"})') == {"": 0.0}  # the replica that is down
    assert values("max(csp_monitor_config_last_reload_successful)") == {"": 0.0}


def test_prometheus_logged_no_error(stack: Stack) -> None:
    wait_for_data(stack, rule_checks())
    errors = [
        line for line in stack.prometheus.log.read_text().splitlines() if "level=error" in line
    ]
    assert not errors, "\n".join(errors)
