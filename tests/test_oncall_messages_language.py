"""Messages to the person a schedule paged: in that person's language (``people:``), and
naming who is on call (e-mail, SMS, chat), in both languages, within the SMS budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.catalog import Catalog, load_catalog
from monitor.config_check import chinese_sms_in_one_segment
from monitor.notify.message import RenderedMessage
from monitor.notify.sms import measure
from monitor.probe import Status
from monitor.store import Store
from tests.conftest import FakeClock, run_cli, started_manager

CONFIG = """
monitor: {public_url: "https://noc.example.cn/monitor"}
incidents: {default_policy: oncall, correlation: {enabled: false}}
notifications: {language: en, sms_max_segments: 2}
people:
  wang.wei: {name: 王伟 (Wang Wei), email: wang.wei@reseller.example.cn, language: zh-CN}
  zhang.min: {name: 张敏 (Zhang Min), email: zhang.min@reseller.example.cn, language: en}
  li.na: {name: 李娜 (Li Na), email: li.na@reseller.example.cn}
schedules:
  primary:
    time_zone: Asia/Shanghai
    layers:
      - {members: [wang.wei, zhang.min, li.na], turn: daily, handoff: "09:00", start: 2026-12-01}
escalation_policies:
  oncall:
    steps:
      - {after: 0m, notify: [oncall-email], recipients: ["schedule:primary"]}
      # the person on call at their e-mail, the lead's mailbox at its own address
      - after: 15m
        notify: [oncall-email, {channel: lead-email, recipients: [lead@reseller.example.cn]}]
        recipients: ["schedule:primary"]
channels:
  oncall-email: {type: email, host: 127.0.0.1, port: 25, security: none,
                 from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn]}
  lead-email: {type: email, host: 127.0.0.1, port: 25, security: none, language: zh-CN,
               from_address: monitor@reseller.example.cn, to: [ops@reseller.example.cn]}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - id: contoso
    name: Contoso (China) Ltd.
    tenant_domain: contoso.partner.onmschina.cn
    # a contact's own language comes before the person's
    contacts: [{name: Zhang Min, email: zhang.min@reseller.example.cn, language: zh-CN}]
    subscriptions: [exchange-online]
  - id: fabrikam
    name: Fabrikam Shanghai Co.
    tenant_domain: fabrikam.partner.onmschina.cn
    subscriptions: [exchange-online]
"""
BEIJING = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING).timestamp()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Store, Catalog]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    catalog = load_catalog(tmp_path / "config.yaml", env={})
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield store, catalog
    finally:
        await store.close()


async def outbox(store: Store, event: str) -> dict[str, RenderedMessage]:
    return {
        row.message.recipients[0]: row.message
        for row in await store.list_outbox()
        if row.message.event == event
    }


async def test_each_person_gets_their_own_language_and_sees_who_is_on_call(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    # 2026-12-01 10:00 Beijing: wang.wei's day (zh-CN)
    clock = FakeClock(at("2026-12-01 10:00"))
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(
        "fabrikam", "exchange-online", Status.UP, Status.DOWN, "503", clock.now
    )
    [page] = (await outbox(store, "opened")).values()
    assert page.recipients == ("wang.wei@reseller.example.cn",)
    assert page.language == "zh-CN"  # the person's, over notifications.language (en)
    assert page.subject.startswith("[中断]")
    assert "值班：    王伟 (Wang Wei)（primary）" in page.text

    # 15 minutes later step 2 pages wang.wei again and the lead's mailbox (zh-CN channel);
    # both read who is on call; the SMS names him within two segments, link kept
    clock.now += 15 * 60
    await manager.tick(clock.now)
    escalated = await outbox(store, "escalated")
    assert sorted(escalated) == ["lead@reseller.example.cn", "wang.wei@reseller.example.cn"]
    for message in escalated.values():
        assert message.language == "zh-CN"
        assert "值班：    王伟 (Wang Wei)（primary）" in message.text
        assert "值班</th>" in (message.html or "") and "王伟 (Wang Wei)（primary）" in (
            message.html or ""
        )
        assert message.sms.startswith("【已升级L2】值班:王伟，中断")
        assert measure(message.sms).segments <= 2
        assert message.sms.endswith(message.ack_url or "?")


async def test_an_english_person_gets_english_with_a_gsm_sms(
    setup: tuple[Store, Catalog],
) -> None:
    store, catalog = setup
    # 2026-12-03 10:00 Beijing: li.na's day; she names no language: the channel's, then
    # notifications.language (en)
    clock = FakeClock(at("2026-12-03 10:00"))
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(
        "fabrikam", "exchange-online", Status.UP, Status.DOWN, "503", clock.now
    )
    [page] = (await outbox(store, "opened")).values()
    assert page.recipients == ("li.na@reseller.example.cn",) and page.language == "en"
    assert "On call:    李娜 (Li Na) (primary)" in page.text
    clock.now += 15 * 60
    await manager.tick(clock.now)
    escalated = await outbox(store, "escalated")
    mine = escalated["li.na@reseller.example.cn"]
    assert mine.language == "en"
    # the Chinese name would make the SMS UCS-2: its Latin part is used
    assert mine.sms.startswith("ESCALATED L2, on call Li Na: DOWN")
    assert measure(mine.sms).encoding.value == "GSM-7"
    # the lead's mailbox is a zh-CN channel: Chinese, naming her
    assert escalated["lead@reseller.example.cn"].sms.startswith("【已升级L2】值班:李娜，")


async def test_an_english_person_and_a_contact_who_reads_chinese(
    setup: tuple[Store, Catalog],
) -> None:
    """zhang.min's person says en, but as Contoso's contact (same e-mail) they asked for
    zh-CN: the contact's language comes first."""
    store, catalog = setup
    clock = FakeClock(at("2026-12-02 10:00"))  # zhang.min's day
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(
        "fabrikam", "exchange-online", Status.UP, Status.DOWN, "503", clock.now
    )
    [page] = (await outbox(store, "opened")).values()
    assert page.recipients == ("zhang.min@reseller.example.cn",)
    assert page.language == "zh-CN"
    composer = manager._composer
    assert composer.language("oncall-email", "zhang.min@example.invalid", "zhang.min") == "en"


SHIPPED = Path(__file__).resolve().parents[1] / "config.yaml"


async def test_validate_warns_of_chinese_sms_in_one_segment(tmp_path: Path) -> None:
    """One segment of Chinese is 70 characters: the id and the ack link (about 80) cannot
    fit, so validate says which SMS channel sends Chinese to whom."""
    shipped = SHIPPED.read_text()
    assert "sms_max_segments: 2 " in shipped
    path = tmp_path / "config.yaml"
    path.write_text(shipped.replace("sms_max_segments: 2 ", "sms_max_segments: 1 "))
    code, _, err = await run_cli("validate", str(path))
    assert code == 0, err  # a warning, not an error
    warnings = [line for line in err.splitlines() if "warning: notifications.sms_max" in line]
    # the on-call SMS pages schedule:primary, whose wang.wei and li.na read Chinese
    assert len(warnings) == 1, err
    assert "SMS channel 'oncall-sms' sends Chinese to person li.na, person wang.wei" in warnings[0]
    assert "set it to 2 or more" in warnings[0]

    # nobody reads Chinese there, or two segments hold it: no warning
    english = shipped.replace("sms_max_segments: 2 ", "sms_max_segments: 1 ").replace(
        "language: zh-CN}", "language: en}"
    )
    for text in (english, shipped):
        path.write_text(text)
        assert chinese_sms_in_one_segment(load_catalog(path, env={}).config) == ()


async def test_timeline_lines_read_in_the_messages_language(
    setup: tuple[Store, Catalog],
) -> None:
    """The timeline a message shows (the 21Vianet ticket draft's actions) is worded by the
    templates in the reader's language from what the engine recorded, naming the person
    on call; a note is text in HTML, never markup."""
    store, catalog = setup
    clock = FakeClock(at("2026-12-01 10:00"))
    manager = await started_manager(store, catalog, clock)
    await manager.status_changed(
        "fabrikam", "exchange-online", Status.UP, Status.DOWN, "status 503", clock.now
    )
    [incident] = manager.open_incidents()
    clock.now += 15 * 60
    await manager.tick(clock.now)
    await manager.add_note(incident.id, "张敏", "重启了 <b>app pool</b>", clock.now + 60)
    await manager.acknowledge(incident.id, "王伟", clock.now + 120)
    current, timeline = await manager.get(incident.id)
    composer = manager._composer
    chinese = composer.draft("vendor_ticket", current, timeline, "desk", "zh-CN")
    for line in [
        "事件开启：中断，严重程度：重要，原因：status 503",
        "已通知第 1 级：oncall-email；值班：王伟 (Wang Wei)（primary）",
        "已升级到第 2 级：oncall-email，lead-email；值班：王伟 (Wang Wei)（primary）",
        "备注（张敏）：重启了 <b>app pool</b>",
        "已确认（王伟）",
    ]:
        assert line in chinese.text, line
    assert "paged" not in chinese.text and "level=" not in chinese.text  # no records
    assert "重启了 &lt;b&gt;app pool&lt;/b&gt;" in (chinese.html or "")
    assert "<b>app pool" not in (chinese.html or "")
    english = composer.draft("vendor_ticket", current, timeline, "desk", "en")
    for line in [
        "Opened: DOWN, severity major: status 503",
        "Escalated to level 2: oncall-email, lead-email; on call: 王伟 (Wang Wei) (primary)",
        "Note by 张敏: 重启了 <b>app pool</b>",
        "Acknowledged by 王伟",
    ]:
        assert line in english.text, line


def test_the_incident_page_words_its_timeline_in_its_language() -> None:
    """The console's timeline: each event the engine recorded as a sentence in the page's
    language, the person on call named; a kind it has no words for shows its name."""
    from monitor.console.incidents import timeline_entry
    from monitor.console.pages import Pages
    from monitor.engine import incidents as engine
    from monitor.engine.model import EscalationStep, IncidentEvent, PolicySnapshot
    from monitor.schedule_config import PersonSpec

    policy = PolicySnapshot(
        "gold",
        (
            EscalationStep(0, ("oncall-sms",), recipients=("schedule:primary",)),
            EscalationStep(900, ("oncall-sms", "noc-email"), recipients=("schedule:primary",)),
        ),
        escalate_after=1800,
    )
    start = at("2026-12-01 10:00")
    incident, opened = engine.open_incident(
        "INC-1", "contoso", "exchange-online", Status.DOWN, "status 503", policy, start,
        oncall=lambda schedule, when: "wang.wei",
    )  # fmt: skip
    escalated = engine.tick(incident, start + 900, oncall=lambda schedule, when: "wang.wei")
    acknowledged = engine.acknowledge(incident, "李娜", start + 1000)
    critical = engine.tick(incident, start + 1900)
    events = [*opened.events, *escalated.events, *acknowledged.events, *critical.events]
    events.append(IncidentEvent("INC-1", start + 2000, "something_new", {"x": 1}))
    people = {"wang.wei": PersonSpec(name="王伟 (Wang Wei)")}
    pages = Pages()

    def lines(lang: str) -> list[str]:
        macros = pages.env.get_template("macros.html.j2").make_module(
            {"words": pages.words, "lang": lang}
        )
        return [str(macros.event_line(timeline_entry(e, people))) for e in events]

    assert lines("zh-CN") == [
        "事件开启：中断，重大：status 503",
        "已通知第 1 级：oncall-sms；值班：王伟 (Wang Wei)（primary）",
        "已升级到第 2 级：oncall-sms，noc-email；值班：王伟 (Wang Wei)（primary）",
        "已确认",
        "严重程度升为严重；中断超过 30 分钟",
        "something_new",
    ]
    assert lines("en") == [
        "Opened: down, major: status 503",
        "Paged level 1: oncall-sms; on call: 王伟 (Wang Wei) (primary)",
        "Escalated to level 2: oncall-sms, noc-email; on call: 王伟 (Wang Wei) (primary)",
        "Acknowledged",
        "Severity raised to critical; down for longer than 30 min",
        "something_new",
    ]
