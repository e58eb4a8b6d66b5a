"""The agents' API on a real daemon: who may pull which location's checks (secrets
included), what the assignment holds, and pushes that are refused whole when any result
is wrong. And the agent's side: an assignment becomes the server's own targets again;
its buffer keeps the newest results when it is full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from monitor.agent.assignment import targets_from
from monitor.agent.buffer import ResultBuffer
from monitor.daemon import Daemon
from tests.conftest import wait_until

AGENT = "agent-token-for-bj-8d1f27"
OTHER = "agent-token-for-gz-41aa09"
READER = "read-token-5c2e77"
SECRET = "bearer-secret-of-contoso-93b1"

CONFIG = """
monitor:
  listen: 127.0.0.1:0
  store: sqlite:///{tmp}/store.db
  data_dir: {tmp}/data
  location: sh-telecom
  api_tokens:
    - {{name: bj-agent, token: "{agent}", roles: [agent], locations: [bj-unicom]}}
    - {{name: gz-agent, token: "{other}", roles: [agent], locations: [gz-mobile]}}
    - {{name: reader, token: "{reader}", roles: [read]}}
defaults: {{interval: 1h, timeout: 2s}}
services:
  portal:
    name: Portal
    checks:
      - {{name: web, type: http, url: "https://{{customer.tenant_domain}}/health",
         bearer_token: "${{CSP_TEST_BEARER}}", locations: [sh-telecom, bj-unicom]}}
      - {{name: here-only, type: tcp, host: 127.0.0.1, port: 9, locations: [sh-telecom]}}
      - {{name: anywhere, type: tcp, host: 127.0.0.1, port: 9}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.example, subscriptions: [portal]}}
  - {{id: fabrikam, name: Fabrikam, tenant_domain: fabrikam.example, subscriptions: [portal]}}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path, agent=AGENT, other=OTHER, reader=READER))
    instance = Daemon(path, env={"CSP_TEST_BEARER": SECRET})
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def call(
    daemon: Daemon,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, CIMultiDict[str]]:
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://127.0.0.1:{daemon.bound_port}{path}", json=body, headers=sent
        ) as response,
    ):
        text = await response.text()
        try:
            document: Any = await response.json(content_type=None)
        except ValueError:
            document = text
        return response.status, document, CIMultiDict(response.headers)


ASSIGNMENT = "/api/v1/agent/assignment?location=bj-unicom"


async def test_only_an_agent_token_for_the_location_gets_its_checks(daemon: Daemon) -> None:
    assert (await call(daemon, "GET", ASSIGNMENT, None))[0] == 401
    assert (await call(daemon, "GET", ASSIGNMENT, READER))[0] == 403
    status, answer, _ = await call(daemon, "GET", ASSIGNMENT, OTHER)
    assert status == 403 and "bj-unicom" in answer
    status, answer, _ = await call(daemon, "GET", "/api/v1/agent/assignment", AGENT)
    assert status == 400 and answer["errors"][0]["field"] == "location"

    status, document, headers = await call(daemon, "GET", ASSIGNMENT, AGENT)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    # the checks listed for bj-unicom, for every customer; not those of other locations
    assert sorted((t["customer"], t["check"]) for t in document["targets"]) == [
        ("contoso", "web"),
        ("fabrikam", "web"),
    ]
    contoso = next(t for t in document["targets"] if t["customer"] == "contoso")
    # placeholders filled and the secret resolved: the agent has neither config nor env
    assert contoso["options"]["url"] == "https://contoso.example/health"
    assert contoso["options"]["bearer_token"] == SECRET

    # unchanged config: the agent's copy is current
    status, _, _ = await call(
        daemon, "GET", ASSIGNMENT, AGENT, headers={"If-None-Match": headers["ETag"]}
    )
    assert status == 304


async def test_an_assignment_becomes_the_servers_own_targets(daemon: Daemon) -> None:
    _, document, _ = await call(daemon, "GET", ASSIGNMENT, AGENT)
    specs, problems = targets_from(document)
    assert problems == []
    assert daemon.catalog is not None
    for target_id, spec in specs.items():
        mine = daemon.catalog.targets[target_id]
        assert (spec.target, spec.timing, spec.locations, spec.quorum, spec.fingerprint) == (
            mine.target,
            mine.timing,
            mine.locations,
            mine.quorum,
            mine.fingerprint,
        )
        assert spec.options == mine.options  # validated by the same plugin


def result(**changes: Any) -> dict[str, Any]:
    now = 1_800_000_000.0
    return {
        "target": "contoso/portal/web",
        "at": now,
        "status": "down",
        "since": now - 5,
        "reason": "connection timed out",
        **changes,
    }


async def test_a_push_with_any_wrong_result_is_refused_whole(daemon: Daemon) -> None:
    daemon.wall = lambda: 1_800_000_000.0
    good = result()
    for bad, field in [
        (result(status="broken"), "results.1.status"),
        (result(at=1_800_000_000.0 + 3600), "results.1.at"),
        (result(since=1_800_000_000.0 + 1), "results.1.since"),
        ({**result(), "extra": 1}, "results.1.extra"),
        # the names become metric names: nothing but what a metric name may hold
        (result(probe={"success": True, "duration": 0.1, "facts": {'x"} 1\nevil': 1}}), None),
    ]:
        body = {"location": "bj-unicom", "agent": "bj-1", "results": [good, bad]}
        status, answer, _ = await call(daemon, "POST", "/api/v1/agent/results", AGENT, body)
        assert status == 400, answer
        if field is not None:
            assert [error["field"] for error in answer["errors"]] == [field]
    assert daemon.desk is not None
    assert daemon.desk.reports("contoso/portal/web").get("bj-unicom") is None  # nothing kept

    body = {"location": "gz-mobile", "agent": "bj-1", "results": [good]}
    assert (await call(daemon, "POST", "/api/v1/agent/results", AGENT, body))[0] == 403
    assert (await call(daemon, "POST", "/api/v1/agent/results", None, body))[0] == 401


async def test_a_push_is_filed_as_the_locations_report_and_recorded(daemon: Daemon) -> None:
    now = daemon.wall()
    pushed = [
        result(at=now - 20, status="up", since=now - 60, reason=""),
        result(
            at=now - 10,
            status="down",
            since=now - 12,
            probe={"success": False, "duration": 2.5, "phases": {"connect": 2.5}},
        ),
        result(target="contoso/portal/here-only", at=now - 10, since=now - 12),  # not bj-unicom's
    ]
    body = {"location": "bj-unicom", "agent": "bj-1", "results": pushed}
    status, answer, _ = await call(daemon, "POST", "/api/v1/agent/results", AGENT, body)
    assert status == 200, answer
    assert answer == {"accepted": 2, "ignored": ["contoso/portal/here-only"]}
    assert daemon.desk is not None
    report = daemon.desk.reports("contoso/portal/web")["bj-unicom"]
    assert (report.status.value, report.at, report.node) == ("down", now - 10, "bj-1")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}/metrics") as response,
    ):
        text = await response.text()
    series = [line for line in text.splitlines() if 'location="bj-unicom"' in line]
    assert any(line.startswith("probe_success{") and line.endswith(" 0.0") for line in series)
    assert any(line.startswith("probe_duration_seconds{") and " 2.5" in line for line in series)

    async def recorded() -> list[tuple[str, str, float]]:
        status, document, _ = await call(
            daemon, "GET", "/api/v1/locations/history?target=contoso/portal/web", READER
        )
        assert status == 200, document
        return [(c["location"], c["status"], c["since"]) for c in document["changes"]]

    async def both() -> bool:
        return [c for c in await recorded() if c[0] == "bj-unicom"] == [
            ("bj-unicom", "up", now - 60),
            ("bj-unicom", "down", now - 12),
        ]

    await wait_until(both, 10, "both changes in the history at their own times")
    # the same batch again (its answer was lost): nothing new
    assert (await call(daemon, "POST", "/api/v1/agent/results", AGENT, body))[0] == 200
    await wait_until(both, 10, "still two changes")


def test_a_full_buffer_keeps_the_newest_and_counts_the_rest() -> None:
    buffer = ResultBuffer(limit=3)
    for index in range(5):
        buffer.add({"n": index})
    assert [item["n"] for item in buffer.peek(10)] == [2, 3, 4]
    assert buffer.dropped == 2
    batch = buffer.peek(2)
    buffer.add({"n": 5})  # while the batch is on its way, the oldest (2) is dropped
    buffer.delivered(batch)
    assert [item["n"] for item in buffer.peek(10)] == [4, 5]


async def test_an_agent_picks_up_a_changed_config_at_its_next_reload(
    daemon: Daemon, tmp_path: Path
) -> None:
    from monitor.agent.runner import Agent

    agent = Agent(f"http://127.0.0.1:{daemon.bound_port}", "bj-unicom", AGENT, reload_every=1)
    agent._server = aiohttp.ClientSession()
    try:
        assert await agent.reload()
        first = agent.version
        assert sorted(agent.targets) == ["contoso/portal/web", "fabrikam/portal/web"]
        assert await agent.reload()  # unchanged: the server answers 304
        assert agent.version == first
        # bj-unicom now probes the tcp check too; fabrikam is gone
        config = tmp_path / "config.yaml"
        text = config.read_text().replace("[sh-telecom]}", "[sh-telecom, bj-unicom]}")
        text = "\n".join(line for line in text.splitlines() if "fabrikam" not in line)
        config.write_text(text)
        ok, message = await daemon.reload()
        assert ok, message
        assert await agent.reload()
        assert agent.version != first
        assert sorted(agent.targets) == ["contoso/portal/here-only", "contoso/portal/web"]
    finally:
        agent.scheduler.shutdown()
        await agent._server.close()
