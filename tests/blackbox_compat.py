"""Judges community blackbox dashboards and alerts (tests/testdata/blackbox/community.yaml)
against a running stack: which panels show what they are meant to, which alerts fire.

A panel works when its query returns data and:
* drawn once for all targets, its series carry one `instance` per target that has the
  panel's metric (every such target, nothing else): one line per target, not one line
  for the daemon; an aggregate without `instance` (a count, an average) needs data only;
* repeated per target (`repeat: VAR`), VAR lists every target that has the metric, and
  for each the query returns only that target's series (or, aggregated, some data).

The targets that "have the metric" are read from the series' own customer, service and
check labels, which the daemon sets whatever the scrape config does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.prometheus_stack import Prometheus

FIXTURE = Path(__file__).parent / "testdata" / "blackbox" / "community.yaml"
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
METRIC = re.compile(r"\b(probe_[a-z_]+)")


def community() -> dict[str, Any]:
    return dict(yaml.safe_load(FIXTURE.read_text(encoding="utf-8")))


@dataclass
class Verdict:
    where: str
    works: bool
    why: str = ""


@dataclass
class Summary:
    panels: list[Verdict] = field(default_factory=list)
    alerts: list[Verdict] = field(default_factory=list)

    def count(self, verdicts: list[Verdict]) -> str:
        return f"{sum(v.works for v in verdicts)} of {len(verdicts)}"

    def broken(self) -> list[Verdict]:
        return [verdict for verdict in self.panels + self.alerts if not verdict.works]


def _substitute(expr: str, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda match: values.get(match.group(1), match.group(0)), expr)


def _targets_with(prometheus: Prometheus, metric: str) -> set[str]:
    """customer/service/check of every target that has the metric."""
    result, error = prometheus.query(f"group by (customer, service, check) ({metric})")
    assert error is None, error
    return {
        f"{m['customer']}/{m['service']}/{m['check']}"
        for m in (item["metric"] for item in result)
        if {"customer", "service", "check"} <= set(m)
    }


def _variables(prometheus: Prometheus, specs: dict[str, Any]) -> tuple[dict, dict]:
    """Each variable's listed values and the text "All" (or the first value) puts in."""
    listed: dict[str, list[str]] = {}
    text: dict[str, str] = {}
    for name, spec in specs.items():
        query = _substitute(spec["query"], text)
        match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query)
        assert match, query
        values = prometheus.label_values(match.group(2), match.group(1))
        listed[name] = values
        # the names need no regex escaping (ids, addresses: a dot matches itself)
        everything = "(" + "|".join(values) + ")"
        if spec.get("all") is True:
            text[name] = everything
        elif spec.get("all"):
            text[name] = spec["all"]
        else:
            text[name] = values[0] if values else ""
    return listed, text


def judge_panel(prometheus: Prometheus, panel: dict[str, Any], listed: dict, text: dict) -> Verdict:
    expr = panel["expr"]
    where = panel["title"]
    metric = METRIC.search(expr)
    assert metric, expr
    expected = _targets_with(prometheus, metric.group(1))
    if not expected:
        return Verdict(where, False, f"no target has {metric.group(1)} in this scenario")
    repeat = panel.get("repeat")
    if repeat is None:
        result, error = prometheus.query(_substitute(expr, text))
        if error or not result:
            return Verdict(where, False, error or "returned nothing")
        shown = [item["metric"].get("instance") for item in result]
        if all(instance is None for instance in shown):
            return Verdict(where, True)  # an aggregate over the targets
        if set(shown) != expected:
            return Verdict(where, False, f"lines for {sorted(set(map(str, shown)))[:4]} …")
        return Verdict(where, True)
    missing = expected - set(listed[repeat])
    if missing:
        return Verdict(where, False, f"${repeat} does not list {sorted(missing)[:3]} …")
    for target in sorted(expected):
        values = {**text, repeat: target}
        result, error = prometheus.query(_substitute(expr, values))
        if error or not result:
            return Verdict(where, False, f"{target}: {error or 'returned nothing'}")
        others = {item["metric"].get("instance", target) for item in result} - {target}
        if others:
            return Verdict(where, False, f"{target}: also shows {sorted(others)[:3]}")
    return Verdict(where, True)


def judge_alert(prometheus: Prometheus, alert: dict[str, Any]) -> Verdict:
    result, error = prometheus.query(alert["expr"])
    if error:
        return Verdict(alert["name"], False, error)
    firing = {item["metric"].get("instance") for item in result}
    silent = set(alert.get("fires", [])) - firing
    wrong = set(alert.get("quiet", [])) & firing
    if silent or wrong:
        why = f"silent for {sorted(silent)}" if silent else ""
        why += f" fires for {sorted(wrong)}" if wrong else ""
        return Verdict(alert["name"], False, why.strip())
    return Verdict(alert["name"], True)


def judge(prometheus: Prometheus) -> Summary:
    summary = Summary()
    fixture = community()
    for dashboard in fixture["dashboards"]:
        listed, text = _variables(prometheus, dashboard.get("variables", {}))
        for panel in dashboard["panels"]:
            verdict = judge_panel(prometheus, panel, listed, text)
            verdict.where = f"{dashboard['name']} / {verdict.where}"
            summary.panels.append(verdict)
    for alert in fixture["alerts"]:
        summary.alerts.append(judge_alert(prometheus, alert))
    return summary
