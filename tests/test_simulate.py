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
    # the gold policy: step 1 after the 60 s correlation hold, to three channels: the
    # person on call in schedule primary (the week of 2026-11-23: wang.wei's turn) by SMS
    # and in the outbox, the NOC's own mailbox by e-mail
    assert sorted(by_event["opened"]) == [
        ("0:06:20", "noc-email", "noc@reseller.example.cn"),
        ("0:06:20", "oncall-sms", "+8613800000001"),
        ("0:06:20", "outbox", "wang.wei"),
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


STEP_RECIPIENTS_CONFIG = """
incidents: {default_policy: lead, tick_interval: 10s, correlation: {enabled: false}}
defaults: {interval: 30s, retry_interval: 10s, failure_threshold: 3, success_threshold: 2}
escalation_policies:
  lead:
    steps:
      - {after: 0m, notify: [noc-email]}
      - {after: 1m, notify: [noc-email], recipients: [lead@reseller.example.cn]}
    escalate_after: 100s
channels:
  noc-email: {type: email, host: 127.0.0.1, port: 25, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn]}
services:
  sharepoint-online:
    name: SharePoint Online (operated by 21Vianet)
    checks: [{name: web, type: tcp, host: 127.0.0.1, port: 1, degraded_latency: 2s}]
customers:
  - {id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [sharepoint-online]}
"""


def test_step_recipients_are_paged_and_a_severity_raise_is_its_own_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(STEP_RECIPIENTS_CONFIG)
    scenario = tmp_path / "slow.yaml"
    scenario.write_text(
        "start: 2026-11-23T09:00:00+08:00\nduration: 10m\n"
        "events:\n  - {at: 0s, target: contoso/sharepoint-online/web, slow: 4.5}\n"
    )
    assert main(["simulate", str(scenario), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    sends = re.findall(r"SEND   (\S+)\s+(\S+)\s+to ([^:]+): (.*)", out)
    # the second step goes to the step's own recipient, not the channel's list
    assert [(event, to) for _, event, to, _ in sends if event == "escalated"] == [
        ("escalated", "lead@reseller.example.cn")
    ]
    # degraded for longer than escalate_after at the last step: one message saying so,
    # with the current figures, not the last step's message again
    [(_, _, to, subject)] = [s for s in sends if s[1] == "severity"]
    assert to == "lead@reseller.example.cn"
    assert "CRITICAL" in subject and "1 min 40 s" in subject
