"""``csp-monitor demo`` as a newcomer runs it: a real process, its console on a free port,
the script played faster (``--pace``); the board turns red for the customer whose web
app fails, a vendor-side incident opens for Exchange, and Ctrl-C stops it all cleanly
(exit 0, the temporary folder gone)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import wait_until

STARTED_WITHIN = 60.0  # bounded waits for a busy 2-core machine, never a measure of speed


async def _lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode().rstrip("\n"))


def _found(lines: list[str], pattern: str) -> str | None:
    for line in lines:
        if match := re.match(pattern, line):
            return match.group(1)
    return None


async def _cell(session: aiohttp.ClientSession, base: str, customer: str, service: str) -> str:
    async with session.get(f"{base}/board?fragment=1") as response:
        page = await response.text()
    match = re.search(
        rf'data-customer="{customer}" data-service="{service}" data-status="(\w+)"', page
    )
    return match.group(1) if match else ""


async def _open_incidents(session: aiohttp.ClientSession, base: str) -> list[dict[str, str]]:
    async with session.get(f"{base}/api/v1/incidents") as response:
        incidents: list[dict[str, str]] = (await response.json())["incidents"]
    return incidents


async def test_the_demo_turns_the_board_red_opens_a_vendor_side_incident_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor.cli",
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--pace",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    out: list[str] = []
    err: list[str] = []
    readers = [
        asyncio.create_task(_lines(process.stdout, out)),
        asyncio.create_task(_lines(process.stderr, err)),
    ]
    try:
        await wait_until(
            lambda: _found(out, r"(Press Ctrl-C)") is not None or process.returncode is not None,
            within=STARTED_WITHIN,
            what="the demo to start",
        )
        assert process.returncode is None, "\n".join(out + err)
        board = _found(out, r"Console:\s+(http://\S+)/board$")
        token = _found(out, r"Sign-in token: (\S+)$")
        folder = _found(out, r"Folder:\s+(\S+) ")
        assert board and token and folder, out
        assert await asyncio.to_thread(Path(folder).is_dir)

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{board}/signin") as response:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await response.text())
            assert csrf
            async with session.post(
                f"{board}/signin",
                data={"csrf": csrf.group(1), "token": token, "person": "newcomer"},
            ) as response:
                assert response.status == 200 and "/board" in str(response.url)
            assert await _cell(session, board, "contoso", "web-app") in ("unknown", "up")

            async def red() -> bool:
                return await _cell(session, board, "contoso", "web-app") == "down"

            await wait_until(red, within=STARTED_WITHIN, what="contoso's web app to turn red")
            # only the customer whose web app fails
            assert await _cell(session, board, "northwind", "web-app") == "up"

            async def vendor_side() -> bool:
                incidents = await _open_incidents(session, board)
                groups = [i["id"] for i in incidents if i["customer"] == "*"]
                members = {
                    i["customer"]
                    for i in incidents
                    if i["service"] == "exchange-online" and i["vendor_incident"] in groups
                }
                return len(groups) == 1 and members == {"contoso", "fabrikam", "northwind"}

            await wait_until(
                vendor_side, within=STARTED_WITHIN, what="a vendor-side Exchange incident"
            )

        process.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.wait_for(process.wait(), 30)
        await asyncio.gather(*readers)
        assert code == 0, "\n".join(out + err)
        assert "Stopping…" in out
        assert not await asyncio.to_thread(Path(folder).exists)  # the folder is gone
        assert not [line for line in err if "Traceback" in line], "\n".join(err)
    finally:
        if process.returncode is None:
            process.kill()  # no clean stop: its folder is left, remove it here
            await process.wait()
            if folder := _found(out, r"Folder:\s+(\S+) "):
                await asyncio.to_thread(shutil.rmtree, folder, True)
        for reader in readers:
            reader.cancel()
