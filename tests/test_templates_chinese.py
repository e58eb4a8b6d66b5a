"""Messages in Chinese: every template in zh-CN beside English, with the same facts,
Beijing time and UTC, SMS within its segment budget (UCS-2), chosen per recipient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import pytest

from monitor.catalog import Catalog, load_catalog
from monitor.notify.sample import sample_context
from monitor.notify.sms import measure
from monitor.notify.templates import EVENTS, TemplateRenderer, localized
from monitor.probe import Status
from monitor.store import Store
from tests.conftest import FakeClock, run_cli, started_manager

ALERT_TEMPLATES = Path(__file__).resolve().parents[1] / "alert_templates"
INCIDENT_ID = "INC-20251123-0007"
ACK_URL = "https://noc.example.cn/monitor/ack/7KQ2M9XW4T"
CUSTOMER = "Contoso (China) Ltd."
NEEDS_ACK_LINK = {"opened", "escalated", "severity", "reminder", "updated", "vendor_ticket",
                  "voice_unavailable"}  # fmt: skip
# Words of the English layout that must not leak into a Chinese message (timeline entries
# are the engine's records, in English, and may say "Acknowledged by …").
ENGLISH_LABELS = ("Customer:", "Service:", "Since:", "Reason:", "Acknowledge (", "Acknowledge INC",
                  "Sent to",
                  "Failing checks", "Incident page")  # fmt: skip


@cache
def renderer_with(segments: int = 2) -> TemplateRenderer:
    """One renderer per SMS budget for the module (building one reads every template)."""
    return TemplateRenderer(sms_max_segments=segments)


def test_every_worded_template_has_a_chinese_version_beside_it() -> None:
    worded = ("subject.txt.j2", "body.txt.j2", "body.html.j2", "sms.txt.j2", "chat.md.j2",
              "voice.txt.j2")  # fmt: skip
    missing = [
        str(path.relative_to(ALERT_TEMPLATES))
        for event in EVENTS
        for path in (ALERT_TEMPLATES / event).iterdir()
        if path.name in worded
        and not (ALERT_TEMPLATES / localized(f"{event}/{path.name}", "zh-CN")).exists()
    ]
    assert missing == []
    assert renderer_with().check_all(sample_context) == []


@pytest.mark.parametrize("event", EVENTS)
def test_chinese_messages_carry_the_same_facts(event: str) -> None:
    renderer = renderer_with()
    english = renderer.render(event, sample_context(event, "en"))
    chinese = renderer.render(event, sample_context(event, "zh-CN"))
    assert chinese.subject != english.subject and chinese.text != english.text
    for name, text in [("subject", chinese.subject), ("text", chinese.text),
                       ("html", chinese.html or ""), ("chat", chinese.chat)]:  # fmt: skip
        assert CUSTOMER in text, name
        assert INCIDENT_ID in text, name
    for name, text in [("text", chinese.text), ("html", chinese.html or "")]:
        assert "北京时间" in text, name  # Beijing time …
        assert "07:12" in text and "23:12" in text and "UTC" in text, name  # … and UTC
        assert (ACK_URL in text) == (ACK_URL in (english.html or english.text)), name
        assert not [label for label in ENGLISH_LABELS if label in text], name
    assert (ACK_URL in chinese.sms) == (event in NEEDS_ACK_LINK)
    assert INCIDENT_ID in chinese.sms
    assert "中断" in chinese.text or "不可用" in chinese.text or "已恢复" in chinese.text
    assert chinese.payload == english.payload | {"sent_at": chinese.payload["sent_at"]}


@pytest.mark.parametrize("segments", [1, 2, 3])
@pytest.mark.parametrize("event", EVENTS)
def test_sms_within_the_segment_budget_in_both_languages(event: str, segments: int) -> None:
    renderer = renderer_with(segments)
    for language, encoding in [("en", "GSM-7"), ("zh-CN", "UCS-2")]:
        sms = renderer.render(event, sample_context(event, language)).sms
        length = measure(sms)
        assert length.encoding.value == encoding, language
        assert length.segments <= segments, (language, sms)
        if language == "zh-CN" and segments == 1:
            continue  # 70 characters: the id and link line (80) alone does not fit
        assert sms.splitlines()[-1].startswith(INCIDENT_ID), language  # the kept last line
        if event in NEEDS_ACK_LINK and segments > 1:
            assert sms.endswith(ACK_URL), language


def test_chinese_voice_text_is_short_and_says_what_to_do() -> None:
    renderer = renderer_with()
    for event in ("opened", "escalated", "reminder", "severity"):
        voice = renderer.render(event, sample_context(event, "zh-CN")).voice
        assert len(voice) <= 350  # Tencent's limit for a voice message
        assert CUSTOMER in voice and "中断" in voice and "无需按键" in voice
        assert "http" not in voice and INCIDENT_ID not in voice  # nothing to spell out
        english = renderer.render(event, sample_context(event, "en")).voice
        assert "Nothing to press" in english


CONFIG = """
monitor: {public_url: "https://noc.example.cn/monitor"}
incidents: {default_policy: gold, correlation: {enabled: false}}
notifications: {language: zh-CN}
escalation_policies:
  gold:
    steps:
      - {after: 0m, notify: [noc-email, ops-webhook-mail]}
channels:
  noc-email: {type: email, host: 127.0.0.1, port: 25, security: none,
              from_address: monitor@reseller.example.cn,
              to: [noc@reseller.example.cn, it-admin@contoso.com.cn]}
  ops-webhook-mail: {type: email, host: 127.0.0.1, port: 25, security: none, language: en,
                     from_address: monitor@reseller.example.cn, to: [ops@reseller.example.cn]}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - id: contoso
    name: Contoso (China) Ltd.
    tenant_domain: contoso.partner.onmschina.cn
    contacts: [{name: Wang Fang, email: it-admin@contoso.com.cn, language: en}]
    subscriptions: [exchange-online]
"""


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield store, catalog
    finally:
        await store.close()


async def test_language_is_chosen_per_recipient(setup: tuple[Store, Catalog]) -> None:
    """The contact's language, else the channel's, else notifications.language."""
    store, catalog = setup
    clock = FakeClock(1_800_000_000.0)
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(
        "contoso", "exchange-online", Status.UP, Status.DOWN, "503", clock.now
    )
    by_recipient = {r.message.recipients[0]: r.message for r in await store.list_outbox()}
    chosen = {person: message.language for person, message in by_recipient.items()}
    assert chosen == {
        "noc@reseller.example.cn": "zh-CN",  # notifications.language
        "it-admin@contoso.com.cn": "en",  # the contact's own
        "ops@reseller.example.cn": "en",  # the channel's
    }
    assert by_recipient["noc@reseller.example.cn"].subject.startswith("[中断]")
    assert by_recipient["it-admin@contoso.com.cn"].subject.startswith("[DOWN]")


async def test_validate_renders_the_chinese_templates_too(tmp_path: Path) -> None:
    (tmp_path / "templates" / "opened").mkdir(parents=True)
    (tmp_path / "templates" / "opened" / "sms.zh-CN.txt.j2").write_text(
        "【中断】{{ incident.no_such_field }}\n"
    )
    (tmp_path / "config.yaml").write_text(
        CONFIG.replace("notifications: {language: zh-CN}",
                       "notifications: {language: zh-CN, templates_dir: templates}")
    )  # fmt: skip
    code, out, err = await run_cli("validate", str(tmp_path / "config.yaml"))
    assert code != 0
    assert "opened/sms.zh-CN.txt.j2:1" in out + err and "no_such_field" in out + err


def test_the_undelivered_note_is_in_the_messages_language() -> None:
    from monitor.notify.undelivered import UndeliveredNote

    note = UndeliveredNote(renderer_with())
    missed = [{"event": "opened", "at": sample_context()["incident"]["opened_at"]}]
    assert note._render("resolved", missed, "zh-CN") == (
        "新事件通知：北京时间 2025-11-24 07:12（UTC 2025-11-23 23:12），此前未能送达。"
    )
    assert note._render("resolved", missed, "en").startswith("Opened at 2025-11-24 07:12")
