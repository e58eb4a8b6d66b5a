"""Shared fixtures: a probe context with a real HTTP client, free local ports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aioresponses import aioresponses
from aiosmtpd.controller import Controller
from yarl import URL

from monitor.catalog import Catalog
from monitor.incident_manager import IncidentManager
from monitor.links import LinkSigner
from monitor.notify.templates import TemplateRenderer
from monitor.probe import ProbeContext
from monitor.runner import new_http_session
from monitor.store import Store
from monitor.vendor import VendorBoard


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


@dataclass
class FakeClock:
    """A clock a test sets by hand: ``clock()`` is ``clock.now``."""

    now: float

    def __call__(self) -> float:
        return self.now


async def started_manager(
    store: Store, catalog: Catalog, clock: FakeClock, board: VendorBoard | None = None
) -> IncidentManager:
    """An incident manager on ``store`` with the built-in templates, started at the clock."""
    manager = IncidentManager(
        store,
        TemplateRenderer(),
        LinkSigner(b"k" * 32),
        failing_checks=lambda c, s: [],
        wall=clock,
        vendor=board,
    )
    manager.configure(catalog)
    await manager.start(clock.now)
    return manager


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


class CustomerServer:
    """A local HTTP server answering ``GET /<customer>`` through ``_handle``: the base of
    the targets whose answer depends on who asks."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{customer}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class PathServer(CustomerServer):
    """Answers 200, or 503 to requests from the source addresses in ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.sources: set[str] = set()  # every source address seen

    async def _handle(self, request: web.Request) -> web.Response:
        source = request.remote or "?"
        self.sources.add(source)
        if source in self.failing:
            return web.Response(status=503, text="unavailable from here")
        return web.Response(text="ok")


@pytest.fixture
async def path_server() -> AsyncIterator[PathServer]:
    server = PathServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


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


@pytest.fixture(autouse=True)
def _collector_settings_kept() -> Iterator[None]:
    """Undo what a daemon started inside a test did to the garbage collector.

    ``Daemon.start()`` freezes every live object and raises the collection thresholds
    for its own process; left so, the rest of the suite would collect rarely and a
    leaked socket would be reported (as an error) in some unrelated later test.
    """
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m monitor.cli *args`` in a child process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:  # timed out: don't leave it running, reap it
            process.kill()
            await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def start_smtp_server(handler: Any, port: int, **parameters: Any) -> Controller:
    """aiosmtpd on 127.0.0.1:``port`` in its own thread; stop it with stop_smtp_server()."""
    controller = Controller(handler, hostname="127.0.0.1", port=port, **parameters)
    try:
        controller.start()
    except BaseException:
        stop_smtp_server(controller)
        raise
    return controller


def stop_smtp_server(controller: Controller) -> None:
    """Stop the server and close its event loop, however far it got in starting."""
    if getattr(controller, "_thread", None) is not None:
        controller.stop()
    # The Controller makes its loop in __init__ but closes it only when its thread ran
    # to the end: after a failed start (the port taken, say) it would stay open.
    if not controller.loop.is_closed():
        controller.loop.close()


# ------------------------------------------------------------------ PostgreSQL

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
T = TypeVar("T")


def run_elsewhere(coro: Coroutine[Any, Any, T]) -> T:
    """Run admin SQL on its own loop in a thread, away from the test's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


async def pg_admin(database: str, *statements: str) -> None:
    connection = await asyncpg.connect(f"{PG_SERVER}/{database}", timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped at the end."""
    name = f"csp_monitor_test_{secrets.token_hex(4)}"
    try:
        run_elsewhere(
            pg_admin(
                "test",
                f'CREATE DATABASE "{name}"',
                # Faster commits; only a server crash (not a subject here) could lose any.
                f'ALTER DATABASE "{name}" SET synchronous_commit = off',
            )
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL on 127.0.0.1:5432 (user postgres, database test) is not reachable: "
            f"{exc!r}. The store tests need it: start PostgreSQL (.ci/run does).",
            pytrace=False,
        )
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        run_elsewhere(pg_admin("test", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ------------------------------------------------------------------ third-party HTTP APIs


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    (pnuckowski/aioresponses#289); a finished request only reads its ``output_size``."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class _Mocked(aioresponses):
    """aioresponses with the response class aiohttp 3.14 needs."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    """Mocks third-party HTTP APIs (SMS gateways, vendor health APIs) for one test."""
    with _Mocked() as mocked:
        yield mocked
