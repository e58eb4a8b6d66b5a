"""On-call through the HTTP API and the CLI of a running daemon: who is on call now and
at another time, the calendar feed, overrides with their refusals, and a gap in the
next seven days warned in the log and exported as a metric."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from icalendar import Calendar

from monitor.cli import main
from monitor.daemon import Daemon
from tests.conftest import WebTarget, unused_port, wait_until
from tests.test_alerting import files

CONFIG = """
monitor:
  listen: 127.0.0.1:{port}
  shutdown_grace: 1s
  ops_channels: [ops]
  api_tokens:
    - {{name: noc, token: noc-token, roles: [operate]}}
    - {{name: wall, token: wall-token, roles: [read]}}
incidents: {{default_policy: standard, tick_interval: 100ms}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [outbox], recipients: ["schedule:primary"]}}
      - {{after: 15m, notify: [outbox], recipients: ["schedule:nights"]}}
channels:
  outbox: {{type: file, directory: outbox}}
  ops: {{type: file, directory: ops}}
people:
  wang.wei: {{name: 王伟 (Wang Wei)}}
  li.na: {{name: 李娜 (Li Na), language: en}}
  zhang.min: {{name: 张敏 (Zhang Min)}}
schedules:
  primary:
    layers:
      - {{name: days, members: [wang.wei, li.na], turn: daily, handoff: "00:00",
         start: 2026-01-01}}
  nights:
    time_zone: Europe/London
    layers:
      - {{members: [zhang.min], turn: weekly, start: 2026-01-05, hours: "20:00-08:00"}}
services:
  exchange-online:
    name: Exchange Online (operated by 21Vianet)
    checks: [{{name: owa, type: http, url: "http://127.0.0.1:{target}/healthz"}}]
customers:
  - {{id: contoso, name: Contoso (China) Ltd., tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}}
"""
OPERATOR = {"Authorization": "Bearer noc-token"}


async def run_cli(
    capsys: pytest.CaptureFixture[str], *args: str, token: str | None = None
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``csp-monitor *args``, in a thread of this process
    (its own event loop; a child process would spend seconds importing under load)."""
    argv = [*args, *(["--token", token] if token else [])]
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def daemon(
    tmp_path: Path, web_target: WebTarget, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Daemon]:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(port=unused_port(), target=web_target.port))
    instance = Daemon(path)
    with caplog.at_level(logging.WARNING, logger="monitor.oncall_book"):
        await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def test_who_is_on_call_the_feed_and_gaps(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{daemon.bound_port}"
    # the nights-only schedule leaves the days uncovered: warned at start, and a metric
    logged = [r.getMessage() for r in caplog.get_records("setup")]
    [gap] = [line for line in logged if "event=oncall_gap" in line]
    assert "schedule=nights" in gap and "gaps=" in gap
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as metrics:
            text = await metrics.text()
        assert 'csp_monitor_oncall_gap_seconds{schedule="primary"} 0.0' in text
        nights_gap = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('csp_monitor_oncall_gap_seconds{schedule="nights"}')
        )
        assert 7 * 12 * 3600 - 3600 <= nights_gap <= 7 * 12 * 3600 + 3600  # 12 h a day

        # the daily check tells the operators, once a day however often it runs
        duties = daemon.alerting.duties
        assert duties is not None
        assert await duties.oncall_daily() == 1
        assert await duties.oncall_daily() == 0
        await wait_until(lambda: files(tmp_path / "ops"), what="the ops message")
        [told] = files(tmp_path / "ops")
        assert "[值班空缺 ON-CALL GAP] nights" in told and "Europe/London" in told
        assert "primary" not in told.split("Subject:")[1].splitlines()[0]

        # at another time: 24 December 2026 23:30 Beijing (15:30 in London, daytime)
        christmas_eve = {"at": "2026-12-24T23:30+08:00"}
        async with session.get(f"{base}/api/v1/oncall", params=christmas_eve) as answer:
            assert answer.status == 200
            found = {s["schedule"]: s for s in (await answer.json())["schedules"]}
        primary, nights = found["primary"], found["nights"]
        # 2026-12-24 is day 357 from 1 January: odd, li.na's day
        assert primary["on_call"]["id"] == "li.na" and primary["on_call"]["name"] == "李娜 (Li Na)"
        assert primary["on_call"]["until"] == "2026-12-24T16:00:00+00:00"  # midnight Beijing
        assert primary["next"]["person"]["id"] == "wang.wei"
        assert nights["on_call"] is None
        assert nights["next"]["person"]["id"] == "zhang.min"
        assert nights["next"]["starts_at"] == "2026-12-24T20:00:00+00:00"  # 20:00 London
        for bad_time in ("yesterday", "0001-01-01", "9999-12-31 23:00", "1e300"):
            async with session.get(f"{base}/api/v1/oncall", params={"at": bad_time}) as bad:
                assert bad.status == 400, bad_time
                assert (await bad.json())["errors"][0]["field"] == "at"

        # the calendar feed: valid iCalendar, one event per shift, UTC times
        async with session.get(f"{base}/api/v1/oncall/primary.ics") as feed:
            assert feed.status == 200
            assert feed.content_type == "text/calendar"
            raw = await feed.read()
        async with session.get(f"{base}/api/v1/oncall/tertiary.ics") as missing:
            assert missing.status == 404
    assert raw.startswith(b"BEGIN:VCALENDAR\r\n") and raw.endswith(b"END:VCALENDAR\r\n")
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))  # folded (RFC 5545 3.1)
    calendar = Calendar.from_ical(raw)
    events = list(calendar.walk("VEVENT"))
    assert 60 <= len(events) <= 72  # daily turns, two weeks back and eight ahead
    people = {str(event["SUMMARY"]) for event in events}
    assert people == {"On call (primary): 王伟 (Wang Wei)", "On call (primary): 李娜 (Li Na)"}
    for event in events[1:-1]:  # the first and last are cut at the feed's ends
        start, end = event.decoded("DTSTART"), event.decoded("DTEND")
        assert start.utcoffset().total_seconds() == 0 and (end - start).total_seconds() == 86400
        assert start.hour == 16  # midnight Beijing

    # a reload: a bad schedule is refused and the old ones keep working; a good one applies
    config = daemon.config_path
    text = config.read_text()
    config.write_text(text.replace('hours: "20:00-08:00"', 'hours: "20:00-08:00", days: []'))
    ok, message = await daemon.reload()
    assert not ok and "schedules.nights.layers[0].days: list at least one day" in message
    config.write_text(text.replace(', hours: "20:00-08:00"', ""))  # nights all day long
    caplog.clear()
    ok, message = await daemon.reload()
    assert ok, message
    assert not [r for r in caplog.records if "event=oncall_gap" in r.getMessage()]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as metrics:
            assert 'csp_monitor_oncall_gap_seconds{schedule="nights"} 0.0' in await metrics.text()


async def test_overrides_through_the_api_and_the_cli(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{daemon.bound_port}"
    cover = {
        "schedule": "primary",
        "person": "zhang.min",
        "covers": "li.na",
        "starts_at": "2026-12-24 20:00",
        "ends_at": "2026-12-25 08:00",
    }
    async with aiohttp.ClientSession() as session:
        url = f"{base}/api/v1/oncall/overrides"
        for body, field in (
            ({**cover, "person": "zhao.lei"}, "person"),
            ({**cover, "schedule": "tertiary"}, "schedule"),
            ({**cover, "starts_at": "Christmas Eve"}, "starts_at"),
            ({**cover, "ends_at": "2026-12-24 19:00"}, "ends_at"),
            ({**cover, "ends_at": "2027-06-01 08:00"}, "ends_at"),
            ({**cover, "by": "me"}, "by"),
        ):
            async with session.post(url, json=body, headers=OPERATOR) as refused:
                assert refused.status == 400, body
                assert [p["field"] for p in (await refused.json())["errors"]] == [field]
        async with session.post(
            url, json=cover, headers={"Authorization": "Bearer wall-token"}
        ) as forbidden:
            assert forbidden.status == 403  # a read-only token cannot change who is paged
        async with session.get(url) as listed:
            assert (await listed.json())["overrides"] == []  # nothing was written
        async with session.delete(f"{url}/OV-nothing", headers=OPERATOR) as missing:
            assert missing.status == 404

    code, out, err = await run_cli(
        capsys,
        "oncall", "override", "add", "primary", "--person", "zhang.min", "--covers", "li.na",
        "--start", "2026-12-24 20:00", "--end", "2026-12-25 08:00", "--url", base,
        token="noc-token",
    )  # fmt: skip
    assert code == 0, err
    override_id = out.split()[1].rstrip(":")
    assert "张敏 (Zhang Min) (zhang.min) covering 李娜 (Li Na) (li.na)" in out
    code, out, err = await run_cli(capsys, "oncall", "--at", "2026-12-24 21:00", "--url", base)
    assert code == 0, err
    assert "primary: on call 张敏 (Zhang Min) (zhang.min) until" in out
    assert f"[override:{override_id}]" in out
    # the CLI checks a request before sending it and names the option
    code, _, err = await run_cli(
        capsys,
        "oncall", "override", "add", "primary", "--person", "li.na",
        "--start", "2026-12-24 20:00", "--end", "soon", "--url", base, token="noc-token",
    )  # fmt: skip
    assert code == 2 and "--end:" in err
    code, out, err = await run_cli(
        capsys, "oncall", "override", "delete", override_id, "--url", base, token="noc-token"
    )
    assert code == 0, err
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/oncall/overrides") as listed:
            assert (await listed.json())["overrides"] == []
        at = {"at": "2026-12-24 21:00"}  # Beijing time
        async with session.get(f"{base}/api/v1/oncall", params=at) as answer:
            [primary] = [
                s for s in (await answer.json())["schedules"] if s["schedule"] == "primary"
            ]
        assert primary["on_call"]["id"] == "li.na"
    assert daemon.store is not None
    entries = [e for e in await daemon.store.audit_entries() if e.kind == "oncall_override"]
    assert [(e.subject, e.actor, e.detail["change"]) for e in entries] == [
        (override_id, "noc", "added"),
        (override_id, "noc", "deleted"),
    ]
