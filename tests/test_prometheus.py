"""Prometheus rules and every dashboard query, against a real Prometheus scraping a real daemon.

promtool checks the example scrape config and the rules and runs the rules' unit
tests (prometheus/tests/). Then one stack runs for the whole module:

* local HTTPS services (a certificate from a test CA that expires in 10 days, another in
  90 days): `/ok`, `/fail` (500) and `/slow` (0.45 s, slower than the probe interval),
  and a DNS server; woodgrove's `edge` service checks them by http, tcp, tls, dns and
  icmp (127.0.0.1);
* the daemon probing them for three customers: sharepoint down for contoso and
  fabrikam (a service failing for several customers), contoso's portal degraded
  and too slow for its interval (skipped runs), everything else up; incidents
  open and page a file channel and a webhook whose receiver is gone (retries,
  then failures); then a reload with a broken file (refused);
* a second daemon probing one of the same targets (woodgrove's exchange);
* the real `prometheus` binary scraping the daemons every second with the shipped
  scrape config's relabelling (the blackbox recipe), with a replica
  that is down and one whose scrapes fail every other time in the same job (and which
  is blind), and
  evaluating the rules every second.

The scenario provokes every alert on purpose, so that every expression, alerts
included, has something to return. Each expression of every rule and of every
dashboard panel (Grafana variables replaced by values Prometheus itself
resolves) must parse and return data: one that returns nothing is a broken
panel or an alert that can never fire. The tests list every such expression.
Community blackbox dashboards and alerts (tests/testdata/blackbox/community.yaml) are
judged on the same stack (tests/blackbox_compat.py).
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.blackbox_compat import judge
from tests.prometheus_stack import (
    PROMETHEUS_DIR,
    RULE_FILES,
    SHORT_CERT_DAYS,
    SINGLE_NODE_RULE_FILES,
    Check,
    Prometheus,
    Stack,
    open_stack,
    report,
    run_tool,
    sampled_every_second,
    tool,
    wait_for_data,
    with_selectors,
)
from tests.test_grafana import Query, dashboards, queries, variable_query, variables

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))

# What Grafana would put in place of its interval variables on a short time range.
GRAFANA_INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}


def rules(files: Sequence[Path] = RULE_FILES) -> list[dict[str, Any]]:
    """Every rule of every rule file, with the group it belongs to."""
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with open_stack(tmp_path_factory.mktemp("stack")) as opened:
        yield opened


# ------------------------------------------------------------------ rules, live


def rule_checks() -> list[Check]:
    checks = []
    for rule in rules(SINGLE_NODE_RULE_FILES):
        name = rule.get("record") or rule["alert"]
        where = f"{rule['file']} / {rule['group']} / {name}"
        checks.append(Check(where, sampled_every_second(rule["expr"])))
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
    assert (SHORT_CERT_DAYS - 1) * 86400 < expiry[""] < SHORT_CERT_DAYS * 86400
    assert values('min(up{job="csp-monitor"})') == {"": 0.0}  # the replica that is down
    # the first daemon refused its reload; the second never reloaded
    reloaded = values("csp_monitor_config_last_reload_successful")
    assert reloaded[f"instance={stack.daemon_address},job=csp-monitor"] == 0.0
    assert reloaded[f"instance={stack.second_address},job=csp-monitor"] == 1.0


def test_prometheus_logged_no_error(stack: Stack) -> None:
    wait_for_data(stack, rule_checks())
    errors = [
        line for line in stack.prometheus.log.read_text().splitlines() if "level=error" in line
    ]
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------ blackbox compatibility


def test_community_blackbox_dashboards_and_alerts_work_with_the_recipe(stack: Stack) -> None:
    """grafana.com 7587 and 13659, the blackbox-exporter mixin and awesome-prometheus-alerts
    (their queries in tests/testdata/blackbox/community.yaml): one line per target, per-target
    variables that list the targets, alerts firing on the broken targets only."""
    wait_for_data(stack, rule_checks())
    while True:  # ranges such as [1m] fill as scrapes come
        summary = judge(stack.prometheus)
        if not summary.broken() or time.monotonic() > stack.deadline:
            break
        time.sleep(1.0)
    assert not summary.broken(), (
        f"panels working: {summary.count(summary.panels)}, "
        f"alerts right: {summary.count(summary.alerts)}\n"
        + "\n".join(f"{verdict.where}: {verdict.why}" for verdict in summary.broken())
    )


def test_every_blackbox_metric_is_exported_per_target(stack: Stack) -> None:
    """The series blackbox dashboards read, each with an instance of its own and the
    `target` it probes (the URL or host:port a link column opens)."""
    wait_for_data(stack, rule_checks())
    wanted = {
        'probe_tls_version_info{version="TLS 1.3"}': "woodgrove/edge/cert",
        "probe_ssl_last_chain_info": "woodgrove/edge/cert",
        "probe_ssl_last_chain_expiry_timestamp_seconds": "woodgrove/exchange-online/owa",
        "probe_ip_protocol": "woodgrove/edge/port",
        "probe_ip_addr_hash": "woodgrove/exchange-online/owa",
        "probe_failed_due_to_regex": "woodgrove/exchange-online/owa",
        "probe_http_uncompressed_body_length": "woodgrove/exchange-online/owa",
        "probe_dns_query_succeeded": "woodgrove/edge/dns",
        "probe_dns_lookup_time_seconds": "woodgrove/exchange-online/owa",
    }
    checks = [Check(f"{selector} of {instance}", selector) for selector, instance in wanted.items()]
    failed = wait_for_data(stack, checks)
    assert not failed, report(failed, len(checks))
    for selector, instance in wanted.items():
        result, _ = stack.prometheus.query(selector)
        daemons: dict[str, set[str]] = {}
        for item in result:
            daemons.setdefault(item["metric"]["instance"], set()).add(
                item["metric"]["monitor_instance"]
            )
        assert instance in daemons, (selector, sorted(daemons))
        assert stack.daemon_address in daemons[instance]
    owa, _ = stack.prometheus.query('probe_success{instance="woodgrove/exchange-online/owa"}')
    # the probed URL without its query string (which could carry a secret)
    assert {item["metric"]["target"] for item in owa} == {
        f"https://127.0.0.1:{stack.services.long_port}/ok"
    }
    unlabelled, _ = stack.prometheus.query('{__name__=~"probe_.+", target=""}')
    assert unlabelled == []


def test_promtool_finds_no_problem_in_the_daemons_exposition(stack: Stack) -> None:
    """Every check type of the scenario (http, tcp, tls, dns), info series included."""
    wait_for_data(stack, rule_checks())
    with urllib.request.urlopen(f"http://{stack.daemon_address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert "probe_ssl_last_chain_info{" in text and "probe_dns_query_succeeded{" in text
    checked = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_two_daemons_probing_one_target_keep_apart(stack: Stack) -> None:
    """Several daemons in one job: the recipe gives their series of one target the same
    `instance` and keeps them apart by `monitor_instance` (no collision, both kept)."""
    selector = 'probe_success{instance="woodgrove/exchange-online/owa"}'
    failed = wait_for_data(stack, [Check("both daemons' series", f"count({selector}) == 2")])
    assert not failed, report(failed, 1)
    result, _ = stack.prometheus.query(selector)
    assert {item["metric"]["monitor_instance"] for item in result} == {
        stack.daemon_address,
        stack.second_address,
    }
