"""Grafana dashboards, provisioning and the deployment files: their structure.

Every PromQL expression of the dashboards is run against a real Prometheus in
tests/test_prometheus.py; this module checks what Grafana itself needs: current
schema, unique panel ids, a layout that does not overlap, every query through the
`datasource` variable, every variable defined, nothing pointing at one machine,
and provisioning and compose files that fit together.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DEPLOY = ROOT / "deploy"

SCHEMA_VERSION = 39  # Grafana 10.4 / 11
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {
    "row",
    "stat",
    "timeseries",
    "table",
    "bargauge",
    "state-timeline",
    "status-history",
    "gauge",
    "text",
}
# Grafana's global variables that may appear in queries, titles and links.
BUILTIN_VARIABLES = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__url_time_range",
    "__data",
    "__value",
    "__field",
    "__series",
    "__all",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
    "timeFilter",
}
VARIABLE_REFERENCE = re.compile(
    r"\$\{([A-Za-z_]\w*)[^}]*\}|\[\[([A-Za-z_]\w*)\]\]|\$([A-Za-z_]\w*)"
)


@dataclass(frozen=True)
class Query:
    """One PromQL target of one panel."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool
    repeat: str | None  # the variable the panel repeats over

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}]"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(path.stem, load(path)) for path in DASHBOARD_FILES]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return found


def variable_query(variable: dict[str, Any]) -> str:
    """The query text of a query variable (object form or the older plain string)."""
    query = variable.get("query")
    if isinstance(query, dict):
        return str(query.get("query", ""))
    return str(query or "")


def queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append(
                Query(
                    name,
                    panel.get("title", "?"),
                    target.get("refId", "?"),
                    target["expr"],
                    bool(target.get("instant")) and not target.get("range"),
                    panel.get("repeat"),
                )
            )
    return found


def all_queries() -> list[Query]:
    return [query for name, dashboard in dashboards() for query in queries(name, dashboard)]


def references(text: str) -> set[str]:
    return {
        next(group for group in match.groups() if group)
        for match in VARIABLE_REFERENCE.finditer(text)
    }


# PromQL, as far as these tests need it: vector selectors and bare metric names.
SELECTOR = re.compile(
    r'(?P<name>[A-Za-z_:][\w:]*)?\s*\{(?P<matchers>(?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}'
)
METRIC_NAME = re.compile(r"(?<![\w:.\"$])([A-Za-z_:][\w:]*)(?!\s*[\w:({\[])")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
OWN_SERIES = re.compile(r"^(probe_|csp_monitor_|up$|scrape_duration_seconds$)|:csp_monitor_")


def bare_metric_names(expr: str) -> list[str]:
    """Metric names used without a {…} selector."""
    rest = SELECTOR.sub(" ", expr)
    rest = re.sub(r'"[^"]*"|\[[^\]]*\]', " ", rest)  # strings and range durations
    rest = GROUPING.sub(" ", rest)  # label lists of by (…), on (…)
    return [name for name in METRIC_NAME.findall(rest) if name.lower() not in KEYWORDS]


def selectors(expr: str) -> list[str]:
    """Every vector selector of an expression, each one a query of its own."""
    found = [match.group(0).strip() for match in SELECTOR.finditer(expr)]
    found += bare_metric_names(expr)
    return list(dict.fromkeys(found))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ dashboards


def test_there_are_the_four_dashboards() -> None:
    titles = {load(path)["title"] for path in DASHBOARD_FILES}
    assert titles == {
        "csp-monitor / NOC overview",
        "csp-monitor / Customer",
        "csp-monitor / Service across customers",
        "csp-monitor / SLA and error budget",
    }


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_dashboard_is_current_grafana_json(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["id"] is None, "a provisioned dashboard has no database id"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), dashboard["uid"]
    assert dashboard["title"] and dashboard["description"]
    assert "csp-monitor" in dashboard["tags"]
    ids = [panel.get("id") for panel in panels(dashboard)]
    assert all(isinstance(panel_id, int) for panel_id in ids), ids
    duplicates = sorted({panel_id for panel_id in ids if ids.count(panel_id) > 1})
    assert not duplicates, f"panel ids used twice: {duplicates}"
    for panel in panels(dashboard):
        where = f"{path.stem} / {panel.get('title')}"
        assert panel["type"] in PANEL_TYPES, f"{where}: unknown panel type {panel['type']}"
        assert panel.get("title"), f"{where}: no title"
        if panel["type"] != "row":
            assert panel.get("description"), f"{where}: say what the panel answers"
            assert panel.get("targets"), f"{where}: no query"
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{where}: refIds {refs}"
            for target in panel["targets"]:
                assert target.get("expr", "").strip(), f"{where}: empty query"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    dashboard = load(path)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), panel["title"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_query_goes_through_the_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    datasource_variables = [v for v in variables(dashboard) if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in datasource_variables] == [("datasource", "prometheus")]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, f"{panel['title']} [{target['refId']}]"
    for variable in variables(dashboard):
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]

    # and nowhere else is a Prometheus datasource named directly
    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("type") == "prometheus" and "uid" in node:
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    assert all(reference == DATASOURCE for reference in walk(dashboard))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.stem)
def test_every_variable_used_is_defined(path: Path) -> None:
    dashboard = load(path)
    defined = [variable["name"] for variable in variables(dashboard)]
    assert len(defined) == len(set(defined)), defined
    known = set(defined) | BUILTIN_VARIABLES
    for position, variable in enumerate(variables(dashboard)):
        if variable["type"] == "query":
            query = variable_query(variable)
            assert query == variable["definition"], variable["name"]
            assert re.fullmatch(r"label_values\((.+,\s*)?\w+\)", query), query
            # a variable may only use those defined before it (Grafana resolves in order)
            assert references(query) <= set(defined[:position]), variable["name"]
        elif variable["type"] == "custom":
            assert variable["options"] and variable["query"], variable["name"]
    texts: list[tuple[str, str]] = []
    for panel in panels(dashboard):
        texts.append((panel["title"], panel.get("title", "")))
        texts.append((panel["title"], panel.get("description", "")))
        if repeat := panel.get("repeat"):
            texts.append((panel["title"], f"${repeat}"))
            repeated = next(v for v in variables(dashboard) if v["name"] == repeat)
            assert repeated["multi"] or repeated["includeAll"], f"{repeat} cannot repeat"
        texts += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
        texts += [(panel["title"], json.dumps(panel.get("fieldConfig", {})))]
    for where, text in texts:
        unknown = references(text) - known
        assert not unknown, f"{path.stem} / {where}: undefined variables {sorted(unknown)}"


def test_no_query_names_a_machine() -> None:
    for query in all_queries():
        expr = query.expr
        assert not re.search(r'\binstance\s*=~?\s*"', expr), f"{query}: names an instance"
        assert not re.search(r"\b(localhost|\d{1,3}(\.\d{1,3}){3})\b", expr), str(query)
        # the csp-monitor series are selected by the $job variable, not a literal job
        assert not re.search(r'\bjob\s*=~?\s*"(?!\$job")', expr), f"{query}: literal job"
    for path in DASHBOARD_FILES:
        text = path.read_text(encoding="utf-8")
        assert "127.0.0.1" not in text and "localhost" not in text, path.name


def test_every_series_selector_is_scoped_by_job() -> None:
    """blackbox_exporter exports probe_success too: panels must not pick up its series."""
    for query in all_queries():
        expr = query.expr
        for selector in SELECTOR.finditer(expr):
            name = selector.group("name") or ""
            named = re.search(r'__name__=~?"([^"]*)"', selector.group("matchers"))
            if OWN_SERIES.search(name) or (named and OWN_SERIES.search(named.group(1))):
                assert 'job=~"$job"' in selector.group("matchers"), f"{query}: {selector.group(0)}"
        for name in bare_metric_names(expr):
            assert not OWN_SERIES.search(name), f'{query}: {name} without job=~"$job"'


def test_status_panels_name_every_status() -> None:
    """0 unknown, 1 up, 2 degraded, 3 down, 4 maintenance, as the daemon exports them."""
    wanted = {"0": "unknown", "1": "up", "2": "degraded", "3": "down", "4": "maintenance"}
    seen = 0
    for _, dashboard in dashboards():
        for panel in panels(dashboard):
            exprs = " ".join(target["expr"] for target in panel.get("targets", []))
            if not re.search(r"csp_monitor_(subscription|target)_status\{", exprs):
                continue
            field_config = panel["fieldConfig"]
            mappings = list(field_config["defaults"].get("mappings", []))
            for override in field_config.get("overrides", []):
                for prop in override["properties"]:
                    if prop["id"] == "mappings":
                        mappings += prop["value"]
            texts = {
                value: option["text"]
                for mapping in mappings
                for value, option in mapping.get("options", {}).items()
            }
            if texts:
                assert texts == wanted, panel["title"]
                seen += 1
    assert seen >= 6


def test_dashboards_link_to_each_other_by_uid() -> None:
    uids = {load(path)["uid"] for path in DASHBOARD_FILES}
    for path in DASHBOARD_FILES:
        for uid in re.findall(r"/d/([\w-]+)/", path.read_text(encoding="utf-8")):
            assert uid in uids, f"{path.name} links to a dashboard that does not exist: {uid}"


# ------------------------------------------------------------------ provisioning


def test_datasource_provisioning_names_the_default_prometheus() -> None:
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml"))
    assert files
    for path in files:
        config = read_yaml(path)
        assert config["apiVersion"] == 1
        sources = config["datasources"]
        prometheus = [source for source in sources if source["type"] == "prometheus"]
        assert len(prometheus) == 1 and prometheus[0]["isDefault"] is True
        assert prometheus[0]["access"] == "proxy"
        assert prometheus[0]["url"] == "http://prometheus:9090"  # the compose service
        # $__rate_interval needs the scrape interval of the csp-monitor job
        scrape = read_yaml(ROOT / "prometheus" / "prometheus.yml")
        job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "csp-monitor")
        assert prometheus[0]["jsonData"]["timeInterval"] == job["scrape_interval"]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = read_yaml(DEPLOY / "docker-compose.yml")
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (resolved against deploy/) of each bind mount."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            found[target] = str((DEPLOY / source).resolve())
    return found


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yaml"))
    assert files
    providers = [provider for path in files for provider in read_yaml(path)["providers"]]
    assert [provider["type"] for provider in providers] == ["file"]
    path = providers[0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    assert mounts(grafana).get(path) == str(GRAFANA / "dashboards")
    for kind in ("datasources", "dashboards"):
        assert mounts(grafana).get(f"/etc/grafana/provisioning/{kind}") == str(
            GRAFANA / "provisioning" / kind
        )


# ------------------------------------------------------------------ deploy/


def test_compose_runs_the_daemon_prometheus_and_grafana_with_these_files() -> None:
    services = compose()["services"]
    assert set(services) == {"csp-monitor", "prometheus", "grafana"}
    for name, service in services.items():
        for target, source in mounts(service).items():
            assert Path(source).exists(), f"{name}: {source} (for {target}) does not exist"
        assert service.get("restart") == "unless-stopped", name

    daemon = services["csp-monitor"]
    build = daemon["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.is_file(), dockerfile
    command = " ".join(daemon["command"])
    listen = re.search(r"--listen\s+0\.0\.0\.0:(\d+)", command)
    assert listen, "the daemon must listen on all interfaces inside its container"
    assert "--config /srv/csp-monitor/config.yaml" in command
    assert mounts(daemon)["/srv/csp-monitor/config.yaml"] == str(ROOT / "config.yaml")

    prometheus = services["prometheus"]
    assert mounts(prometheus)["/etc/prometheus"] == str(ROOT / "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = read_yaml(ROOT / "prometheus" / "prometheus.yml")
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "csp-monitor")
    assert job["static_configs"][0]["targets"] == [f"csp-monitor:{listen.group(1)}"]

    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    assert set(grafana["depends_on"]) == {"prometheus"}
    assert set(prometheus["depends_on"]) == {"csp-monitor"}
    # named volumes are declared
    declared = set(compose().get("volumes", {}))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in declared, source


def test_dockerfile_installs_the_package_with_its_templates() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11", text, re.M)
    # the build context must hold alert_templates/ for the wheel to carry it
    assert re.search(r"^COPY alert_templates ", text, re.M) and "pip install ." in text
    assert re.search(r"^USER \w+", text, re.M), "run as an unprivileged user"
    assert "EXPOSE 9700" in text


def systemd_unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (DEPLOY / "csp-monitor.service").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, line
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_runs_reloads_and_stops_the_daemon() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    assert re.search(r"/csp-monitor run --config \S+", service["ExecStart"][0])
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["User"] == ["csp-monitor"]
    assert "network-online.target" in unit["Unit"]["After"][0]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_finds_no_problem_in_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart is executable: point it at one that is
    text = (DEPLOY / "csp-monitor.service").read_text(encoding="utf-8")
    executable = re.search(r"ExecStart=(\S+)", text)
    assert executable
    unit = tmp_path / "csp-monitor.service"
    unit.write_text(text.replace(executable.group(1), "/bin/true"), encoding="utf-8")
    checked = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [
        line
        for line in (checked.stdout + checked.stderr).splitlines()
        if str(unit) in line or "csp-monitor.service" in line
    ]
    assert not problems, "\n".join(problems)
