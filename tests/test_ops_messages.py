"""The operators' messages about the monitor itself (blind, sight restored): every format
renders, in zh-CN and English, and an SMS fits."""

from __future__ import annotations

import pytest

from monitor.notify.sms import measure
from monitor.notify.templates import TemplateRenderer
from monitor.ops_messages import OPS_EVENTS, check_ops_templates, sample_ops_context


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(sms_max_segments=2)


def test_ops_templates_have_no_problems(renderer: TemplateRenderer) -> None:
    assert check_ops_templates(renderer) == []


@pytest.mark.parametrize("event", OPS_EVENTS)
def test_each_ops_message_names_the_node_the_time_and_the_canaries(
    renderer: TemplateRenderer, event: str
) -> None:
    parts = renderer.render(event, sample_ops_context(event))
    assert "noc-sh-01" in parts.subject and "noc-sh-01" in parts.text and "noc-sh-01" in parts.sms
    assert "07:12" in parts.text and "23:12 UTC" in parts.text  # Beijing time and UTC
    assert "监控" in parts.text and "Monitoring" in parts.text  # zh-CN and English
    assert "system-resolver (dns): FAILED: the system resolver did not answer" in parts.text
    assert "gateway (tcp): ok" in parts.text
    assert parts.payload["event"] == event and parts.payload["node"] == "noc-sh-01"
    assert parts.payload["since"] == "2025-11-23T23:12:00+00:00"
    assert measure(parts.sms).segments <= 2
    assert "None" not in parts.text


def test_blind_and_its_resolution_say_what_happened(renderer: TemplateRenderer) -> None:
    blind = renderer.render("blind", sample_ops_context("blind"))
    assert blind.subject.startswith("[监控失明 BLIND] noc-sh-01")
    assert "Monitoring blind from noc-sh-01 since 2025-11-24 07:12" in blind.text
    assert "no customer incident opens or resolves" in blind.text
    restored = renderer.render("sight_restored", sample_ops_context("sight_restored"))
    assert "after 17 min blind" in restored.text
    assert restored.payload["until"] == "2025-11-23T23:29:00+00:00"
