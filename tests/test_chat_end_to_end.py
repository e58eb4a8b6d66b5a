"""A page through the whole daemon to a DingTalk robot served on 127.0.0.1: the chat
template, the outbox, the notifier and the signed request, and the acknowledge link
in the chat message really acknowledges the incident."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor.daemon import Daemon
from tests.conftest import WebTarget, unused_port, wait_until
from tests.test_alerting import write_config

SECRET = "SEC0123456789abcdef-end-to-end"
TOKEN = "robot-token-end-to-end"


class FakeDingTalk:
    """DingTalk's robot endpoint: checks the token and the signature like DingTalk."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _send(self, request: web.Request) -> web.Response:
        query = request.query
        timestamp = query.get("timestamp", "")
        expected = base64.b64encode(
            hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        if query.get("access_token") != TOKEN or query.get("sign") != expected:
            self.refused.append(request.query_string)
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        self.bodies.append(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/robot/send", self._send)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def texts(self) -> list[str]:
        return [body["markdown"]["text"] for body in self.bodies]


@pytest.fixture
async def robot() -> AsyncIterator[FakeDingTalk]:
    fake = FakeDingTalk()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def daemon(
    tmp_path: Path, web_target: WebTarget, robot: FakeDingTalk
) -> AsyncIterator[Daemon]:
    path = tmp_path / "config.yaml"
    write_config(path, web_target.port, unused_port(), unused_port())
    text = path.read_text().replace("notify: [noc-email, outbox]", "notify: [noc-dingtalk]")
    text = text.replace("channels:\n", f"""channels:
  noc-dingtalk: {{type: dingtalk, access_token: {TOKEN}, secret: {SECRET},
                 endpoint: "http://127.0.0.1:{robot.port}/robot/send",
                 mention_mobiles: ["+8613800000000"]}}
""", 1)  # fmt: skip
    path.write_text(text)
    instance = Daemon(path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def test_a_page_reaches_dingtalk_and_its_ack_link_acknowledges(
    daemon: Daemon, web_target: WebTarget, robot: FakeDingTalk
) -> None:
    web_target.status = 503
    await wait_until(lambda: len(robot.bodies) >= 1, what="the opened message in the group")
    [opened] = robot.bodies
    text = opened["markdown"]["text"]
    assert "Contoso (China) Ltd." in text and "DOWN" in text and "INC-" in text
    assert opened["at"]["atMobiles"] == ["13800000000"] and "@13800000000" in text
    match = re.search(r"\[Acknowledge[^\]]*\]\((http://127\.0\.0\.1:\d+/ack/\S+)\)\n", text)
    assert match, text
    async with aiohttp.ClientSession() as session:
        async with session.post(match.group(1), data={"by": "Li Wei"}) as done:
            assert done.status == 200, await done.text()
    await wait_until(
        lambda: any("acknowledged" in t for t in robot.texts()[1:]), what="the ack message"
    )
    acknowledged = next(t for t in robot.texts()[1:] if "acknowledged" in t)
    assert "/ack/" not in acknowledged  # nothing left to acknowledge
    assert robot.refused == []
