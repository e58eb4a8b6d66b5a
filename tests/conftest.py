"""Shared fixtures: a probe context with a real HTTP client, free local ports."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from monitor.probe import ProbeContext
from monitor.runner import new_http_session


@pytest.fixture
async def probe_ctx() -> AsyncIterator[ProbeContext]:
    session = new_http_session()
    try:
        yield ProbeContext(http=session, timeout=5.0)
    finally:
        await session.close()


def unused_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    return unused_port()


class WebTarget:
    """A local HTTP service whose answer a test can change: the thing being monitored."""

    def __init__(self) -> None:
        self.status = 200
        self.body = "healthy"
        self.delay = 0.0
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.body)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def web_target() -> AsyncIterator[WebTarget]:
    target = WebTarget()
    await target.start()
    try:
        yield target
    finally:
        await target.stop()


async def wait_until(
    condition: Callable[[], Awaitable[bool] | bool], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
