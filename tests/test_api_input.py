"""The HTTP API against bad input: a real daemon, real sockets, every answer a clear 4xx.

Bad bytes, absurd nesting, wrong JSON types, oversized text, forged or mangled
links and tokens must each be refused with a status and a message naming what
was wrong, never a 500 and never a half-applied change.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import monitor.api
from monitor.daemon import Daemon
from monitor.engine.model import Incident
from monitor.links import LinkSigner
from tests.conftest import WebTarget, wait_until

OPERATE = "noc-operate-token"
READ = "grafana-read-token"


def write_config(path: Path, port: int, *, protect_reads: bool) -> None:
    path.write_text(f"""
monitor:
  listen: 127.0.0.1:0
  public_url: http://127.0.0.1:1
  shutdown_grace: 1s
  protect_reads: {str(protect_reads).lower()}
  api_tokens:
    - {{name: noc, token: {OPERATE}, roles: [operate]}}
    - {{name: grafana, token: {READ}, roles: [read]}}
defaults: {{interval: 200ms, retry_interval: 100ms, timeout: 1s, failure_threshold: 1,
           success_threshold: 1}}
incidents:
  default_policy: standard
  tick_interval: 100ms
  correlation: {{enabled: false}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [outbox]}}
notifications:
  poll_interval: 100ms
channels:
  outbox: {{type: file, directory: outbox}}
services:
  exchange-online:
    name: Exchange Online
    checks:
      - {{name: owa, type: http, url: "http://127.0.0.1:{port}/healthz"}}
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online]}}
""")


async def start_daemon(tmp_path: Path, web_target: WebTarget, protect_reads: bool) -> Daemon:
    config = tmp_path / "config.yaml"
    write_config(config, web_target.port, protect_reads=protect_reads)
    instance = Daemon(config)
    await instance.start()
    return instance


@pytest.fixture
async def daemon(tmp_path: Path, web_target: WebTarget) -> AsyncIterator[Daemon]:
    instance = await start_daemon(tmp_path, web_target, protect_reads=True)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def incident(daemon: Daemon, web_target: WebTarget) -> Incident:
    """An open incident (the monitored service answers 503)."""
    manager = daemon.alerting.manager
    assert manager is not None
    web_target.status = 503

    async def opened() -> bool:
        return bool(await manager.list_incidents())

    await wait_until(opened, what="an incident")
    [found] = await manager.list_incidents()
    return found


async def call(
    daemon: Daemon,
    method: str,
    path: str,
    *,
    token: str | None = OPERATE,
    body: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> tuple[int, str]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"http://127.0.0.1:{daemon.bound_port}{path}",
            data=body if body is not None else data,
            headers=sent,
        ) as response,
    ):
        return response.status, await response.text()


async def raw_request(daemon: Daemon, request: bytes) -> tuple[int, bytes]:
    """Send bytes aiohttp's client would refuse to send (raw header bytes), return the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.bound_port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


# ------------------------------------------------------------------ item: protect_reads


async def test_protect_reads_covers_the_status_endpoint_but_not_metrics(daemon: Daemon) -> None:
    status, _ = await call(daemon, "GET", "/api/v1/status", token=None)
    assert status == 401
    status, text = await call(daemon, "GET", "/api/v1/status", token=READ)
    assert status == 200 and "subscriptions" in text
    for open_path in ("/metrics", "/healthz", "/readyz"):
        status, _ = await call(daemon, "GET", open_path, token=None)
        assert status == 200, open_path


async def test_status_stays_open_without_protect_reads(
    tmp_path: Path, web_target: WebTarget
) -> None:
    instance = await start_daemon(tmp_path, web_target, protect_reads=False)
    try:
        status, _ = await call(instance, "GET", "/api/v1/status", token=None)
        assert status == 200
    finally:
        await instance.close()


# ------------------------------------------------------------------ bodies


async def test_bodies_that_are_not_utf8_or_nest_too_deep_are_400(
    daemon: Daemon, incident: Incident
) -> None:
    notes = f"/api/v1/incidents/{incident.id}/notes"
    for body, expected in (
        (b'{"text": "caf\xe9 \xff"}', "the body must be UTF-8 (invalid byte at offset 13)"),
        (b"[" * 100_000, "the body nests deeper than 32 levels"),
        (b'{"text": ' * 50_000, "the body nests deeper than 32 levels"),
        (b"{not json", "the body must be JSON"),
    ):
        status, text = await call(daemon, "POST", notes, body=body)
        assert status == 400, text
        problem = json.loads(text)
        assert problem["status"] == "error" and problem["message"].startswith("body: ")
        [error] = problem["errors"]
        assert error["field"] == "body" and error["message"].startswith(expected), text
    _, timeline = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    assert [e for e in timeline if e.kind == "note"] == []


@pytest.mark.parametrize(
    ("action", "body", "field", "expected"),
    [
        ("resolve", {"note": 5}, "note", "must be a string"),
        ("notes", {"text": None}, "text", "must be a string"),
        ("notes", {"text": ["a"]}, "text", "must be a string"),
        ("notes", {}, "text", "is required"),
        ("notes", {"text": "ok", "extra": 1}, "extra", "is not a field"),
        ("vendor-case", {"case": []}, "case", "must be a string"),
        ("vendor-case", {"case": 12345}, "case", "must be a string"),
        ("resolve", {"note": "x" * 16_385}, "note", "at most 16384 characters"),
        ("notes", {"text": "x" * 16_385}, "text", "at most 16384 characters"),
        ("vendor-case", {"case": "7" * 257}, "case", "at most 256 characters"),
        ("customer-updates", {"state": "fixed", "text": "x"}, "state", "'investigating'"),
        ("customer-updates", {"state": "identified"}, "text", "is required"),
        ("customer-updates", {"state": "identified", "text": " "}, "text", "give the update"),
    ],
)
async def test_wrong_types_and_oversized_text_are_refused_naming_the_field(
    daemon: Daemon, incident: Incident, action: str, body: Any, field: str, expected: str
) -> None:
    method = "PUT" if action == "vendor-case" else "POST"
    status, text = await call(
        daemon, method, f"/api/v1/incidents/{incident.id}/{action}", json_body=body
    )
    assert status == 400, text
    problem = json.loads(text)
    assert problem["status"] == "error" and problem["message"].startswith(f"{field}: "), text
    [error] = problem["errors"]
    assert error["field"] == field and expected in error["message"], text
    stored, timeline = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    assert stored.state.value == "open" and stored.vendor_case is None
    assert not [
        e for e in timeline if e.kind in ("note", "vendor_case", "resolved", "customer_update")
    ]


async def test_free_text_is_stored_without_control_characters(
    daemon: Daemon, incident: Incident
) -> None:
    path = f"/api/v1/incidents/{incident.id}"
    status, _ = await call(
        daemon,
        "POST",
        f"{path}/notes",
        json_body={"text": "restarted\x00 the \x1b[31mproxy\x07\r\nstep 2:\tcalled 21V\x7f"},
    )
    assert status == 200
    status, _ = await call(
        daemon, "PUT", f"{path}/vendor-case", json_body={"case": "\t2611290040\n00123\x08"}
    )
    assert status == 200
    note = "x" * 16_384
    assert (await call(daemon, "POST", f"{path}/notes", json_body={"text": note}))[0] == 200
    stored, timeline = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    status, _ = await call(
        daemon,
        "POST",
        f"{path}/customer-updates",
        json_body={"state": "identified", "text": "Restoring\x00 mail flow"},
    )
    assert status == 200
    stored, timeline = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    [update] = [e for e in timeline if e.kind == "customer_update"]
    assert (update.actor, update.detail) == (
        "noc",
        {"state": "identified", "text": "Restoring mail flow"},
    )
    notes = [e.detail["text"] for e in timeline if e.kind == "note"]
    assert notes == ["restarted the [31mproxy\nstep 2:\tcalled 21V", note]
    assert stored.vendor_case == "2611290040 00123"


# ------------------------------------------------------------------ query parameters


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=-1", "limit: a whole number from 1 to 1000"),
        ("limit=0", "limit: a whole number from 1 to 1000"),
        ("limit=abc", "limit: a whole number from 1 to 1000"),
        ("limit=1001", "limit: a whole number from 1 to 1000"),
        ("limit=" + "9" * 5000, "limit: a whole number from 1 to 1000"),
        ("limit=%D9%A3", "limit: a whole number from 1 to 1000"),  # an Arabic-Indic 3
        ("state=closed", "state: one of open, acknowledged, resolved, all"),
    ],
)
async def test_bad_list_parameters_are_400(daemon: Daemon, query: str, expected: str) -> None:
    status, text = await call(daemon, "GET", f"/api/v1/incidents?{query}", token=READ)
    field, _, message = expected.partition(": ")
    assert (status, json.loads(text)) == (
        400,
        {"status": "error", "message": expected, "errors": [{"field": field, "message": message}]},
    )


async def test_limits_in_range_are_served(daemon: Daemon, incident: Incident) -> None:
    for query in ("limit=1", "limit=1000", "state=all&limit=5"):
        status, text = await call(daemon, "GET", f"/api/v1/incidents?{query}", token=READ)
        assert status == 200 and incident.id in text, query


# ------------------------------------------------------------------ acknowledge links


@pytest.mark.parametrize(
    "token",
    [
        "%D9%A3%D9%A3.abc",  # Arabic-Indic digits: isdigit() but not a time
        "1795000000.%C3%A9t%C3%A9",  # a MAC with non-ASCII letters
        "9" * 5000 + ".abc",  # more digits than int() converts
        "%FF%FE.%FF",
        "",
    ],
)
async def test_mangled_ack_links_show_the_invalid_link_page(
    daemon: Daemon, incident: Incident, token: str
) -> None:
    path = f"/ack/{incident.id}?t={token}"
    for method in ("GET", "POST"):
        status, text = await call(daemon, method, path, token=None, data={"by": "Li"})
        assert status == 403, (method, text)
        assert "Link not valid" in text
    stored, _ = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    assert stored.state.value == "open"


# ------------------------------------------------------------------ tokens


async def test_refused_tokens_are_401_counted_and_logged_without_the_token(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor.api")
    request = (
        b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer s3cr\xffet-\xe9\r\nConnection: close\r\n\r\n"
    )
    status, _ = await raw_request(daemon, request)
    assert status == 401
    assert (await call(daemon, "GET", "/api/v1/status", token="guessed-token"))[0] == 401
    assert (await call(daemon, "GET", "/api/v1/status", token=None))[0] == 401
    assert (await call(daemon, "POST", "/-/reload", token=READ))[0] == 403
    counts = {
        reason: daemon.registry.get_sample_value(
            "csp_monitor_api_auth_refused_total", {"reason": reason}
        )
        for reason in ("malformed", "unknown_token", "missing", "lacks_role")
    }
    assert counts == {"malformed": 1, "unknown_token": 1, "missing": 1, "lacks_role": 1}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "event=api_auth_refused reason=malformed" in logged
    assert "reason=lacks_role" in logged and "token=grafana" in logged
    for secret in ("s3cr", "guessed-token", READ):
        assert secret not in logged


# ------------------------------------------------------------------ files on disk


async def test_data_directory_and_its_files_are_private(
    tmp_path: Path, web_target: WebTarget
) -> None:
    previous = os.umask(0o022)  # a usual umask: files would be world-readable by default
    try:
        instance = await start_daemon(tmp_path, web_target, protect_reads=False)
        try:
            web_target.status = 503  # an incident, so that a message is written
            outbox = tmp_path / "outbox"
            await wait_until(lambda: any(outbox.glob("*.txt")), what="a notification file")
        finally:
            await instance.close()
    finally:
        os.umask(previous)
    data = tmp_path / "data"
    modes = {
        path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [data, *data.iterdir(), outbox, *outbox.iterdir()]
    }
    assert {name for name in modes if name.startswith("data/")} >= {
        "data/csp-monitor.db",
        "data/audit.key",
        "data/link-signing.key",
    }
    wanted = {name: 0o700 if name in ("data", "outbox") else 0o600 for name in modes}
    assert {name: oct(mode) for name, mode in modes.items()} == {
        name: oct(mode) for name, mode in wanted.items()
    }


async def test_sqlite_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    from monitor.store import Store

    previous = os.umask(0o022)
    try:
        store = await Store.open(tmp_path / "state" / "monitor.db")
        try:
            await store.beat("node", 1.0, 2.0)
            files = sorted((tmp_path / "state").iterdir())
            assert [f.name for f in files] == ["monitor.db", "monitor.db-shm", "monitor.db-wal"]
            modes = [oct(stat.S_IMODE(f.stat().st_mode)) for f in files]
        finally:
            await store.close()
    finally:
        os.umask(previous)
    assert modes == [oct(0o600)] * 3
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


async def test_ack_form_with_bad_bytes_is_refused_not_a_crash(
    daemon: Daemon, incident: Incident
) -> None:
    for form in (b"by=%FF%FE&t=%FF", b"by=\xff\xfe&t=\xff", b"t=" + b"9" * 5000 + b".x"):
        status, text = await call(
            daemon,
            "POST",
            f"/ack/{incident.id}",
            token=None,
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert 400 <= status < 500, (form[:20], status, text)
    stored, _ = await daemon.alerting.manager.get(incident.id)  # type: ignore[union-attr]
    assert stored.state.value == "open"


@pytest.mark.parametrize("incident_id", ["%FF%FE", "INC-" + "9" * 5000, "%00", "INC-1%0Aforged"])
async def test_odd_incident_ids_are_404(daemon: Daemon, incident_id: str) -> None:
    for method, action in (("GET", ""), ("POST", "/ack"), ("POST", "/notes")):
        status, _ = await call(
            daemon,
            method,
            f"/api/v1/incidents/{incident_id}{action}",
            json_body={"text": "x"} if action == "/notes" else None,
        )
        assert status == 404, (method, action)


def test_the_api_package_does_not_import_the_daemon() -> None:
    """The handlers reach the daemon only through ApiServices: importing the API (and
    building its app) must not pull in monitor.daemon, or the import cycle is back."""
    code = (
        "import sys, monitor.api, monitor.api.services\n"
        "assert 'monitor.daemon' not in sys.modules, 'monitor.api imports monitor.daemon'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # not even for type checking: the Protocol is what the handlers may rely on
    package = Path(monitor.api.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "monitor.daemon", module.name
                if node.module == "monitor":
                    assert "daemon" not in {alias.name for alias in node.names}, module.name
            elif isinstance(node, ast.Import):
                assert "monitor.daemon" not in {alias.name for alias in node.names}, module.name


async def test_every_refusal_of_a_request_has_one_json_shape(
    daemon: Daemon, incident: Incident
) -> None:
    """Bad bodies, queries and ids answer {"status", "message", "errors": [{field, message}]},
    whatever the endpoint; the message reads as the old text did."""
    refused = [
        ("GET", "/api/v1/incidents/INC-nope", None, 404, "id", "no incident INC-nope"),
        ("POST", f"/api/v1/incidents/{incident.id}/resolve", {}, 409, "id", "still down"),
        ("POST", "/api/v1/maintenance", {"duration": "2h"}, 400, "starts_at", "required"),
        ("DELETE", "/api/v1/maintenance/MW-nope", None, 404, "id", "no such maintenance"),
        ("GET", "/api/v1/reports/uptime?period=0001-01", None, 400, "period", "0001-01"),
        ("GET", "/api/v1/reports/uptime?period=2026-10&format=docx", None, 400, "format", "pdf"),
        ("GET", "/api/v1/reports/uptime?period=2026-10&customer=x", None, 404, "customer", "'x'"),
    ]
    for method, path, body, expected_status, field, words in refused:
        status, text = await call(daemon, method, path, json_body=body)
        problem = json.loads(text)
        assert (status, problem["status"]) == (expected_status, "error"), (path, text)
        fields = {error["field"]: error["message"] for error in problem["errors"]}
        assert words in fields.get(field, ""), (path, text)
        assert f"{field}: " in problem["message"], (path, text)
    # credentials are refused as before: text, and a challenge for the client
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}/api/v1/incidents") as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="csp-monitor"'


async def test_an_ack_link_for_an_acknowledged_incident_says_so(
    daemon: Daemon, incident: Incident, tmp_path: Path
) -> None:
    """The second person to press the link learns it is acknowledged already (409),
    not an internal error."""
    assert (await call(daemon, "POST", f"/api/v1/incidents/{incident.id}/ack"))[0] == 200
    signer = LinkSigner.from_data_dir(tmp_path / "data")
    token = signer.token(incident.id, time.time() + 3600)
    status, text = await call(
        daemon, "POST", f"/ack/{incident.id}?t={token}", token=None, data={"by": "Li"}
    )
    assert status == 409, text
    assert "Nothing to acknowledge" in text and "nothing to acknowledge" in text
