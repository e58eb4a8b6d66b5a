"""What the console's tests share: a daemon on its own thread, a headless Chromium, and
a plain HTTP client with cookies.

The daemon runs its event loop on a thread so that the tests can drive the browser
with Selenium's blocking calls without freezing the server they are talking to.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from monitor.daemon import Daemon

T = TypeVar("T")


class DaemonThread:
    """A daemon started and stopped on its own thread and event loop."""

    def __init__(self, config: Path) -> None:
        self.daemon = Daemon(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self.daemon.start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` on the daemon's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.daemon.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


class Answers:
    """Local services the checks probe: one port per customer, whose JSON answer a test
    sets (``{"state": "ok"}`` is healthy)."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []

    def start(self, customers: list[str]) -> None:
        self._thread.start()
        for customer in customers:
            self.state[customer] = "ok"
            self.ports[customer] = asyncio.run_coroutine_threadsafe(
                self._serve(customer), self.loop
            ).result(10)

    async def _serve(self, customer: str) -> int:
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"state": self.state[customer]})

        app = web.Application()
        app.router.add_get("/healthz", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def chromium() -> tuple[webdriver.Chrome, str]:
    """Debian's headless Chromium through its chromedriver, with a fresh profile."""
    profile = tempfile.mkdtemp(prefix="csp-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    return driver, profile


def close_chromium(driver: webdriver.Chrome, profile: str) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    """The whole page (beyond the viewport) as a PNG in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def screenshots_folder(default: Path) -> Path:
    """Where screenshots go: ``$CONSOLE_SCREENSHOTS`` when set (to look at them), else a
    temporary folder of the test run."""
    chosen = os.environ.get("CONSOLE_SCREENSHOTS")
    return Path(chosen) if chosen else default


class Browser:
    """A plain HTTP client with cookies, for what a browser would not send (a form
    without its CSRF token)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def csrf_of(self, page: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, "the page has no CSRF field"
        return match.group(1)

    def sign_in(self, token: str, person: str = "") -> tuple[int, str, dict[str, str]]:
        _, page, _ = self.request("GET", "/signin")
        return self.request(
            "POST",
            "/signin",
            {"csrf": self.csrf_of(page), "token": token, "person": person, "next": "/board"},
        )
