"""Voice calls through the incident manager and a real SQLite store: one call per callee
from the first provider whose budget allows it, budgets kept across a restart, the
night rule, failover to the second provider, and nobody callable → the timeline says
so and the NOC lead is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.catalog import Catalog, load_catalog
from monitor.engine import incidents as engine
from monitor.incident_manager import IncidentManager
from monitor.notify.voice_plan import plan_calls
from monitor.probe import Status
from monitor.store import Store
from tests.conftest import FakeClock, started_manager

# 22:55 Beijing time: the night rule (1 Tencent call between 22:00 and 08:00) applies.
NIGHT = datetime(2027, 1, 14, 22, 55, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
DAY = datetime(2027, 1, 14, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
MIN = 60.0
ONCALL = "+8613800000000"
CONFIG = """
monitor: {public_url: "https://noc.example.cn/monitor", ops_channels: [noc-lead]}
incidents: {default_policy: gold, correlation: {enabled: false}, escalate_after: 12h}
escalation_policies:
  gold:
    steps:
      - {after: 0m, notify: [noc-email]}
      - {after: 10m, notify: [tencent-call, aliyun-call], recipients: ["+8613800000000"]}
channels:
  noc-email: {type: email, host: 127.0.0.1, port: 25, security: none,
              from_address: monitor@reseller.example.cn, to: [noc@reseller.example.cn]}
  noc-lead: {type: email, host: 127.0.0.1, port: 25, security: none,
             from_address: monitor@reseller.example.cn, to: [lead@reseller.example.cn]}
  tencent-call: {type: tencent_voice, secret_id: AKIDexample, secret_key: "${TENCENT_KEY}",
                 voice_sdk_app_id: "1400006666", template_id: "4356"}
  aliyun-call: {type: aliyun_voice, access_key_id: LTAI5example, access_key_secret: "${ALIYUN_KEY}",
                tts_code: TTS_465000001}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{name: owa, type: tcp, host: 127.0.0.1, port: 1}]
customers:
  - {id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}
  - {id: fabrikam, name: Fabrikam Shanghai Co., tenant_domain: fabrikam.partner.onmschina.cn,
     subscriptions: [exchange-online]}
  - {id: northwind, name: 北风贸易, tenant_domain: northwind.partner.onmschina.cn,
     subscriptions: [exchange-online]}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "config.yaml").write_text(CONFIG)
    return load_catalog(
        tmp_path / "config.yaml", env={"TENCENT_KEY": "t-secret", "ALIYUN_KEY": "a-secret"}
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield store
    finally:
        await store.close()


async def escalate(manager: IncidentManager, customer: str, at: float) -> str:
    """Opens ``customer``'s incident at ``at`` and lets its voice step fire 10 min later."""
    await manager.status_changed(customer, "exchange-online", Status.UP, Status.DOWN, "503", at)
    await manager.tick(at + 10 * MIN)
    [incident] = [i for i in manager.open_incidents() if i.customer == customer]
    return incident.id


async def calls(store: Store, incident_id: str) -> list[tuple[str, tuple[str, ...]]]:
    rows = await store.list_outbox()
    return [
        (r.channel, r.message.recipients)
        for r in rows
        if r.message.incident_id == incident_id and r.channel.endswith("-call")
    ]


async def timeline(manager: IncidentManager, incident_id: str) -> dict[str, dict[str, object]]:
    _incident, events = await manager.get(incident_id)
    return {e.kind: e.detail for e in events if e.kind.startswith("voice_")}


async def test_one_call_from_the_first_provider_with_a_spoken_chinese_text(
    store: Store, catalog: Catalog
) -> None:
    clock = FakeClock(DAY)
    manager = await started_manager(store, catalog, clock)
    clock.now = DAY + 10 * MIN
    incident = await escalate(manager, "contoso", DAY)

    assert await calls(store, incident) == [("tencent-call", (ONCALL,))]
    [row] = [r for r in await store.list_outbox() if r.channel == "tencent-call"]
    assert row.message.language == "zh-CN"  # voice channels speak Chinese by default
    assert "Contoso (China) Ltd." in row.message.voice and "中断" in row.message.voice
    assert "确认" in row.message.voice
    assert await timeline(manager, incident) == {}  # nothing skipped


async def test_night_rule_across_a_restart_fails_over_then_nobody_is_callable(
    tmp_path: Path, catalog: Catalog
) -> None:
    database = f"sqlite:///{tmp_path / 'store.db'}"
    clock = FakeClock(NIGHT)
    store = await Store.open(database)
    manager = await started_manager(store, catalog, clock)
    clock.now = NIGHT + 10 * MIN
    first = await escalate(manager, "contoso", NIGHT)
    assert await calls(store, first) == [("tencent-call", (ONCALL,))]
    await manager.close(clock.now)
    await store.close()

    # A restart: the budgets come back from the store.
    store = await Store.open(database)
    try:
        clock.now = NIGHT + 70 * MIN  # 00:05 Beijing: still the same night, 1 h later
        manager = await started_manager(store, catalog, clock)
        second = await escalate(manager, "fabrikam", NIGHT + 60 * MIN)
        # Tencent allows one call a night: Aliyun (no night rule) calls instead.
        assert await calls(store, second) == [("aliyun-call", (ONCALL,))]
        failover = (await timeline(manager, second))["voice_failover"]
        assert failover["callee"] == ONCALL and failover["called_by"] == "aliyun-call"
        assert "between 22:00 and 08:00" in str(failover["skipped"])

        # 30 s later: Tencent's night is spent and Aliyun allows one call a minute.
        clock.now += 30
        third = await escalate(manager, "northwind", clock.now - 10 * MIN)
        assert await calls(store, third) == []
        unavailable = (await timeline(manager, third))["voice_unavailable"]
        assert unavailable["callee"] == ONCALL and unavailable["step"] == 2
        assert "tencent-call" in str(unavailable["skipped"])
        assert "aliyun-call: 1 of 1 calls per 1 min used" in str(unavailable["skipped"])
        [lead] = [r for r in await store.list_outbox() if r.channel == "noc-lead"]
        assert lead.message.event == "voice_unavailable"
        assert lead.message.incident_id == third
        assert lead.message.recipients == ("lead@reseller.example.cn",)
        assert ONCALL in lead.message.text and "call them yourself" in lead.message.subject
        assert "per 1 min used" in lead.message.text
    finally:
        await store.close()


async def test_acknowledgements_and_resolutions_place_no_call(
    store: Store, catalog: Catalog
) -> None:
    clock = FakeClock(DAY)
    manager = await started_manager(store, catalog, clock)
    clock.now = DAY + 10 * MIN
    incident = await escalate(manager, "contoso", DAY)
    clock.now += 5 * MIN
    await manager.acknowledge(incident, "li.wei", clock.now)
    assert await calls(store, incident) == [("tencent-call", (ONCALL,))]  # the page's only


def test_the_shipped_config_calls_after_ten_minutes_without_credentials() -> None:
    """Voice is a later step ("call if nobody acknowledged in 10 minutes"), and the shipped
    file loads with no provider credentials in the environment."""
    shipped = load_catalog(Path(__file__).resolve().parents[1] / "config.yaml", env={})
    config = shipped.config
    [step] = [s for s in config.escalation_policies["gold"].steps if s.after == 10 * MIN]
    kinds = [config.channels[name].type for name in step.channels()]
    assert kinds == ["file", "tencent_voice", "aliyun_voice"]
    assert config.escalation_policies["gold"].steps[0].after == 0


async def test_a_page_decided_twice_places_one_call(store: Store, catalog: Catalog) -> None:
    """The same escalation decided again (dedup keys make it one page) must not count a
    second call, nor fail over to the next provider and call twice."""
    clock = FakeClock(DAY)
    manager = await started_manager(store, catalog, clock)
    clock.now = DAY + 10 * MIN
    incident_id = await escalate(manager, "contoso", DAY)
    [incident] = manager.open_incidents()
    channels = ("tencent-call", "aliyun-call")
    page = engine.Page("escalated", incident, channels, f"{incident_id}:step:1", "",
                       dict.fromkeys(channels, (ONCALL,)))  # fmt: skip
    decision = engine.Decision(pages=[page])
    composer = manager._composer
    async with store.transaction() as tx:
        messages = await composer.messages(decision, tx)
        planned = await plan_calls(
            messages, decision, catalog.config.channels, tx, clock.now + 20,
            composer.voice_unavailable_messages,
        )  # fmt: skip
        assert [m.channel for m in planned] == ["tencent-call"]  # the one queued already
        assert decision.events == []  # no failover
        assert len(await tx.voice_calls("tencent-call", ONCALL, 0)) == 1
        assert await tx.voice_calls("aliyun-call", ONCALL, 0) == []
