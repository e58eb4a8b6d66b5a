"""An escalation step to ``schedule:primary`` pages whoever is on call, through the whole
daemon to a real SMTP server (aiosmtpd); an override added through the HTTP API with the
operator's token changes who that is, and the person paged hears of the resolution even
after the override is gone."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from tests.conftest import (
    WebTarget,
    run_cli,
    start_smtp_server,
    stop_smtp_server,
    unused_port,
    wait_until,
)
from tests.test_alerting import Mailbox, files, write_config

ONCALL = """
people:
  wang.wei: {name: 王伟 (Wang Wei), email: wang.wei@reseller.example.cn, phone: "+8613800000001"}
  li.na: {name: 李娜 (Li Na), email: li.na@reseller.example.cn, language: en}
schedules:
  primary:
    time_zone: Asia/Shanghai
    layers:
      - {name: everyday, members: [wang.wei], turn: daily, handoff: "00:00", start: 2026-01-01}
"""


def write_oncall_config(path: Path, target_port: int, smtp_port: int) -> None:
    write_config(path, target_port, smtp_port, unused_port())
    text = path.read_text().replace(
        "- {after: 0s, notify: [noc-email, outbox]}",
        '- {after: 0s, notify: [noc-email, outbox], recipients: ["schedule:primary"]}',
    )
    path.write_text(text + ONCALL)


@pytest.fixture
def smtp(free_port: int) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = start_smtp_server(mailbox, free_port)
    try:
        yield mailbox, free_port
    finally:
        stop_smtp_server(controller)


@pytest.fixture
async def daemon(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> AsyncIterator[Daemon]:
    path = tmp_path / "config.yaml"
    write_oncall_config(path, web_target.port, smtp[1])
    instance = Daemon(path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


def recipients(mailbox: Mailbox, prefix: str) -> list[str]:
    return sorted(str(m["To"]) for m in mailbox.with_subject(prefix))


async def test_a_step_to_a_schedule_pages_the_person_on_call(
    daemon: Daemon, web_target: WebTarget, smtp: tuple[Mailbox, int], tmp_path: Path
) -> None:
    mailbox, _ = smtp
    base = f"http://127.0.0.1:{daemon.bound_port}"
    now = time.time()
    # the second engineer covers the first for two hours, through the API with the operator's
    # token, in the schedule's own time zone
    local = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now - 3600 + 8 * 3600))
    later = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now + 3600 + 8 * 3600))
    body = {
        "schedule": "primary",
        "person": "li.na",
        "covers": "wang.wei",
        "starts_at": local,
        "ends_at": later,
        "reason": "swap for the company dinner",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/v1/oncall/overrides", json=body) as refused:
            assert refused.status == 401  # no token: nothing changes
        headers = {"Authorization": "Bearer noc-token"}
        async with session.post(
            f"{base}/api/v1/oncall/overrides", json=body, headers=headers
        ) as made:
            assert made.status == 201, await made.text()
            override = await made.json()
        assert override["person"]["id"] == "li.na" and override["covers"]["id"] == "wang.wei"
        async with session.get(f"{base}/api/v1/oncall") as answer:
            [primary] = (await answer.json())["schedules"]
        assert primary["on_call"]["id"] == "li.na"
        assert primary["on_call"]["source"] == f"override:{override['id']}"
        assert primary["next"]["person"]["id"] == "wang.wei"  # when the override ends

        web_target.status = 503
        await wait_until(lambda: mailbox.with_subject("[DOWN"), what="the page")
        # the person on call, at their e-mail; not the channel's own list, not wang.wei
        assert recipients(mailbox, "[DOWN") == ["li.na@reseller.example.cn"]
        # a file channel (no addresses) names the person
        await wait_until(lambda: files(tmp_path / "outbox"), what="the page in the outbox")
        [page_file] = files(tmp_path / "outbox")
        assert "Recipients: li.na" in page_file

        # the override goes; the person who was paged still hears how it ends
        async with session.delete(
            f"{base}/api/v1/oncall/overrides/{override['id']}", headers=headers
        ) as deleted:
            assert deleted.status == 200
    web_target.status = 200
    await wait_until(lambda: mailbox.with_subject("[RESOLVED"), what="the resolution")
    assert recipients(mailbox, "[RESOLVED") == ["li.na@reseller.example.cn"]
    subject = mailbox.with_subject("[DOWN")[0]["Subject"]
    incident_id = re.search(r"INC-\d{8}-\d{4}", str(subject)).group(0)  # type: ignore[union-attr]
    assert daemon.alerting.manager is not None
    _, timeline = await daemon.alerting.manager.get(incident_id)
    [paged] = [event for event in timeline if event.kind == "paged"]
    assert paged.detail["oncall"] == {"primary": "li.na"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/incidents/{incident_id}") as shown:
            assert (await shown.json())["oncall"] == [
                {"level": 1, "schedule": "primary", "person": "li.na"}
            ]

    # with the override gone, the rotation's person is on call again (the CLI says so)
    code, out, err = await run_cli("oncall", "--url", base)
    assert code == 0, err
    assert "primary: on call 王伟 (Wang Wei) (wang.wei)" in out


async def test_nobody_on_call_pages_the_channels_own_list_and_says_so(
    tmp_path: Path, web_target: WebTarget, smtp: tuple[Mailbox, int]
) -> None:
    """A rotation that starts next year has nobody on call now: the page is not lost, it
    goes to the channel's own recipients, and the timeline says nobody was on call."""
    mailbox, smtp_port = smtp
    path = tmp_path / "config.yaml"
    write_oncall_config(path, web_target.port, smtp_port)
    path.write_text(path.read_text().replace("start: 2026-01-01", "start: 2999-01-01"))
    daemon = Daemon(path)
    await daemon.start()
    try:
        web_target.status = 503
        await wait_until(lambda: mailbox.with_subject("[DOWN"), what="the page")
        assert recipients(mailbox, "[DOWN") == ["noc@reseller.example.cn"]
        assert daemon.alerting.manager is not None
        [incident] = daemon.alerting.manager.open_incidents()
        _, timeline = await daemon.alerting.manager.get(incident.id)
        [paged] = [event for event in timeline if event.kind == "paged"]
        assert paged.detail["oncall"] == {"primary": None}
    finally:
        await daemon.close()
