"""Cluster: its config, the sharding maths, membership and leadership in PostgreSQL."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from monitor.catalog import load_catalog
from monitor.config import ConfigError

CONFIG = """
monitor:
  store: {store}
  cluster: {cluster}
services:
  portal:
    name: Azure portal
    checks: [{{name: web, type: tcp, host: 127.0.0.1, port: 443}}]
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [portal]}}
"""


def write_config(tmp_path: Path, store: str, cluster: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(store=store, cluster=cluster))
    return path


def test_cluster_defaults_to_the_host_name_and_five_second_heartbeats(tmp_path: Path) -> None:
    path = write_config(tmp_path, "postgresql://postgres@127.0.0.1:5432/x", "{}")
    cluster = load_catalog(path, env={}).config.monitor.cluster
    assert cluster is not None
    assert (cluster.node_id, cluster.heartbeat_interval, cluster.dead_after) == (
        socket.gethostname(),
        5.0,
        20.0,
    )
    assert cluster.lease_seconds == 20.0


@pytest.mark.parametrize(
    "store", ["./data/monitor.db", "sqlite:///tmp/monitor.db", "null"], ids=["path", "url", "none"]
)
def test_a_cluster_on_sqlite_is_refused_naming_the_setting(tmp_path: Path, store: str) -> None:
    path = write_config(tmp_path, store, "{node_id: a}")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    [issue] = caught.value.issues
    assert issue.path == "monitor.cluster"
    assert "needs a PostgreSQL store" in issue.message


def test_a_disabled_cluster_runs_on_sqlite(tmp_path: Path) -> None:
    path = write_config(tmp_path, "./data/monitor.db", "{enabled: false}")
    assert load_catalog(path, env={}).config.monitor.cluster is not None


def test_dead_after_shorter_than_two_heartbeats_is_refused(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "postgresql://postgres@127.0.0.1/x", "{heartbeat_interval: 5s, dead_after: 8s}"
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [str(i) for i in caught.value.issues] == [
        "monitor.cluster: dead_after (8s) must be at least twice heartbeat_interval (5s)"
    ]
