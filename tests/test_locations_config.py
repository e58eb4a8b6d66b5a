"""Locations and quorum in the config: the nearest level wins, a majority by default."""

from __future__ import annotations

from pathlib import Path

from monitor.catalog import load_catalog

CONFIG = """
monitor:
  location: ${NODE_LOCATION}
  source_address: 127.0.0.3
defaults:
  locations: [sh-telecom, bj-unicom, gz-mobile]
services:
  portal:
    name: Azure portal
    checks:
      - {name: web, type: tcp, host: 127.0.0.1, port: 443}
      - {name: two, type: tcp, host: 127.0.0.1, port: 443, locations: [sh-telecom, bj-unicom]}
      - {name: one, type: tcp, host: 127.0.0.1, port: 443, quorum: 1}
  mail:
    name: Mail
    locations: [bj-unicom]
    checks: [{name: mx, type: tcp, host: 127.0.0.1, port: 25}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.example, subscriptions: [portal, mail]}
"""


def test_locations_and_quorum_come_from_the_nearest_level(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    catalog = load_catalog(path, env={"NODE_LOCATION": "bj-unicom"})
    assert catalog.config.monitor.location == "bj-unicom"
    assert catalog.config.monitor.source_address == "127.0.0.3"
    placed = {
        target_id: (spec.locations, spec.quorum) for target_id, spec in catalog.targets.items()
    }
    assert placed == {
        "contoso/portal/web": (("sh-telecom", "bj-unicom", "gz-mobile"), 2),
        "contoso/portal/two": (("sh-telecom", "bj-unicom"), 2),
        "contoso/portal/one": (("sh-telecom", "bj-unicom", "gz-mobile"), 1),
        "contoso/mail/mx": (("bj-unicom",), 1),
    }


def test_without_locations_a_target_is_probed_from_one_place(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG.replace("  location: ${NODE_LOCATION}\n", "")
        .replace("defaults:\n  locations: [sh-telecom, bj-unicom, gz-mobile]\n", "")
        .replace(", quorum: 1", "")
    )
    catalog = load_catalog(path, env={})
    assert catalog.config.monitor.location == "default"
    assert catalog.targets["contoso/portal/web"].locations == ()
    assert catalog.targets["contoso/portal/web"].quorum == 0
