"""``csp-monitor simulate``: an escalation policy tried on a scripted outage, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).parent / "testdata" / "scenarios" / "exchange-outage.yaml"


def test_simulated_outage_pages_escalates_stops_at_ack_and_resolves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", str(SCENARIO), "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    sends = re.findall(r"\+(\d+:\d\d:\d\d)  SEND   (\S+)\s+(\S+)\s+to ([^:]+):", out)
    by_event: dict[str, list[tuple[str, str, str]]] = {}
    for offset, channel, event, recipient in sends:
        by_event.setdefault(event, []).append((offset, channel, recipient))
    # the gold policy: step 1 after the 60 s correlation hold, to three channels
    assert sorted(by_event["opened"]) == [
        ("0:06:20", "noc-email", "noc@reseller.example.cn"),
        ("0:06:20", "oncall-sms", "+8613800000000"),
        ("0:06:20", "outbox", "(channel's recipients)"),
    ]
    # step 2 fifteen minutes later: the NOC lead
    assert ("0:21:20", "noc-lead-sms", "+8613900000000") in by_event["escalated"]
    # acknowledged at 0:25: everybody paged hears it; no reminder or vendor ticket after it
    assert {channel for _, channel, _ in by_event["acknowledged"]} == {
        "outbox",
        "noc-email",
        "oncall-sms",
        "noc-lead-sms",
    }
    assert "reminder" not in by_event and "vendor_ticket" not in by_event
    # recovered at 1:40, confirmed after two good probes 30 s apart at most
    assert {channel for _, channel, _ in by_event["resolved"]} == {
        "outbox",
        "noc-email",
        "oncall-sms",
        "noc-lead-sms",
    }
    assert all(offset.startswith("1:40:") for offset, _, _ in by_event["resolved"])
    assert "severity: severity=critical" in out  # 30 min down: critical, even if acknowledged


def test_a_bad_scenario_names_its_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("events:\n  - {at: 5m, target: contoso/exchange-online/owa}\n")
    assert main(["simulate", str(bad), "--config", str(ROOT / "config.yaml")]) == 2
    assert (
        "events[0]: a target event needs exactly one of fail, slow, ok" in capsys.readouterr().err
    )
