"""Start the demo: the world, the daemon with its console on it, the script; stop them
all cleanly on Ctrl-C or SIGTERM and remove the temporary folder (unless kept)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from monitor.console.keys import STATUS_PAGE, console_key
from monitor.console.status_page import link_token
from monitor.daemon import Daemon
from monitor.demo.demo_config import write_demo_config
from monitor.demo.script import play
from monitor.demo.world import World


def _free_port(host: str) -> int:
    """A port the system gives for ``host``: the console's URL must be known before the
    daemon starts, for the links in its messages."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    number = int(port) if port.isdigit() else 9700
    return host, number or _free_port(host)


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(
    listen: str, pace: float = 1.0, keep: bool = False, say: Callable[[str], None] = _say
) -> int:
    folder = Path(tempfile.mkdtemp(prefix="csp-monitor-demo-"))
    world = World()
    daemon: Daemon | None = None
    script: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await world.start()
        host, port = _address(listen)
        url = f"http://{host}:{port}"
        token = secrets.token_urlsafe(18)
        config = write_demo_config(folder, world, f"{host}:{port}", url, token)
        daemon = Daemon(config)
        await daemon.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        catalog, manager = daemon.catalog, daemon.incidents
        assert catalog is not None and manager is not None
        status_key = console_key(catalog, folder, STATUS_PAGE)
        contoso = catalog.customers["contoso"]
        say("csp-monitor demo: three customers' Exchange, SharePoint, sign-in and web app")
        say(f"  simulated on http://127.0.0.1:{world.port}")
        say(f"Console:      {url}/board")
        say(f"Sign-in token: {token}")
        say(f"Status page:  {url}/status/contoso?k={link_token(status_key, contoso)}")
        say(f"Reports:      {url}/reports")
        say(f"Folder:       {folder} (config.yaml, data/, outbox/)")
        say("Press Ctrl-C to stop.")
        script = asyncio.create_task(play(world, manager, pace, say))
        await stop.wait()
        say("Stopping…")
        return 0
    finally:
        if script is not None:
            script.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await script
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if daemon is not None:
            await daemon.close()
        await world.stop()
        if keep:
            say(f"Kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
