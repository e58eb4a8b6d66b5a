"""CLI commands that act on the running daemon through its HTTP API.

``csp-monitor incidents …``, ``csp-monitor maintenance …``, ``csp-monitor oncall …``
and ``csp-monitor cluster status``. The daemon's
address comes from ``--url``, else the config's ``monitor.listen``; the token
from ``--token`` or ``$CSP_MONITOR_TOKEN`` (never from a command line in
shell history, if you can help it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from monitor.catalog import load_catalog
from monitor.config import ConfigError
from monitor.maintenance_request import InvalidRequest, parse_request
from monitor.oncall_request import parse_override


class RemoteError(Exception):
    pass


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    try:
        listen = load_catalog(args.config).config.monitor.listen
    except ConfigError as exc:
        raise RemoteError(f"give --url, or fix the config: {exc.summary()}") from None
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{host}:{port}"


async def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    token = args.token or os.environ.get("CSP_MONITOR_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = _base_url(args) + path
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            text = await response.text()
            if response.status >= 400:
                raise RemoteError(f"{method} {path}: {response.status} {_problem(text)}")
            return json.loads(text) if text else None
    except aiohttp.ClientError as exc:
        raise RemoteError(f"cannot reach the daemon at {url}: {exc}") from None


def _problem(text: str) -> str:
    """What an error answer says: its ``message`` when it is JSON, else its text."""
    try:
        document = json.loads(text)
    except ValueError:
        return text.strip()
    message = document.get("message") if isinstance(document, dict) else None
    return str(message) if message else text.strip()


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _print_incident(incident: dict[str, Any]) -> None:
    print(
        f"{incident['id']}  {incident['state']:<12} {incident['severity']:<8} "
        f"{incident['customer']}/{incident['service']} {incident['status']} since "
        f"{_when(incident['opened_at'])}: {incident['reason']}"
    )


async def _incidents(args: argparse.Namespace) -> None:
    action = args.action
    if action == "list":
        query = f"?state={args.state}" + (f"&customer={args.customer}" if args.customer else "")
        found = await _call(args, "GET", f"/api/v1/incidents{query}")
        for incident in found["incidents"]:
            _print_incident(incident)
        if not found["incidents"]:
            print(f"no {args.state} incidents")
        return
    path = f"/api/v1/incidents/{args.id}"
    if action == "show":
        incident = await _call(args, "GET", path)
        _print_incident(incident)
        for event in incident["timeline"]:
            who = f" by {event['actor']}" if event["actor"] else ""
            detail = ", ".join(f"{k}={v}" for k, v in event["detail"].items() if v)
            print(
                f"  {_when(event['at'])}  {event['kind']}{who}" + (f": {detail}" if detail else "")
            )
        return
    calls = {
        "ack": ("POST", f"{path}/ack", None),
        "resolve": ("POST", f"{path}/resolve", {"note": args.text or ""}),
        "note": ("POST", f"{path}/notes", {"text": args.text or ""}),
        "vendor-case": ("PUT", f"{path}/vendor-case", {"case": args.text or ""}),
    }
    method, target, body = calls[action]
    _print_incident(await _call(args, method, target, body))


async def _maintenance(args: argparse.Namespace) -> None:
    if args.action == "list":
        found = await _call(args, "GET", "/api/v1/maintenance")
        for window in found["maintenance"]:
            scope = f"{window['customer'] or '*'}/{window['service'] or '*'}"
            print(
                f"{window['id']}  {scope:<32} {_when(window['starts_at'])} → "
                f"{_when(window['ends_at'])} {window['recurrence'] or 'once'} "
                f"({window['timezone']}) {window['reason']}"
            )
        if not found["maintenance"]:
            print("no maintenance windows")
        return
    if args.action == "delete":
        await _call(args, "DELETE", f"/api/v1/maintenance/{args.id}")
        print(f"deleted {args.id}")
        return
    if args.action == "proposed":
        found = await _call(args, "GET", "/api/v1/vendor-messages")
        for proposal in found["proposed_windows"]:
            waiting = [s for s in proposal["subscriptions"] if not s["confirmed"]]
            state = f"{len(waiting)} to confirm" if waiting else "confirmed"
            print(
                f"{proposal['message_id']}  {_when(proposal['starts_at'])} → "
                f"{_when(proposal['ends_at'])}  {state}: {proposal['title']}"
            )
            for subscription in waiting:
                print(f"    {subscription['customer']}/{subscription['service']}")
        if not found["proposed_windows"]:
            print("no windows proposed by Message Center posts")
        return
    if args.action == "confirm":
        body = {"customers": args.customer} if args.customer else {}
        done = await _call(args, "POST", f"/api/v1/vendor-messages/{args.id}/confirm", body)
        for window in done["maintenance"]:
            print(f"created {window['id']}: {window['customer']}/{window['service']}")
        return
    body = {
        "starts_at": args.start,
        "duration": args.duration,
        "customer": args.customer,
        "service": args.service,
        "recurrence": args.recurrence,
        "timezone": args.timezone,
        "reason": args.reason,
    }
    parse_request(body)  # checked here first: a clear error, and nothing sent
    window = await _call(args, "POST", "/api/v1/maintenance", body)
    print(f"created {window['id']}: {_when(window['starts_at'])} → {_when(window['ends_at'])}")


async def _cluster(args: argparse.Namespace) -> None:
    found = await _call(args, "GET", "/api/v1/cluster")
    lease = found["leader"]
    if lease is None:
        print("leader: none yet")
    else:
        state = "expired" if lease["expired"] else f"until {_when(lease['expires_at'])}"
        print(
            f"leader: {lease['node']} (epoch {lease['epoch']}, since {_when(lease['since'])}, "
            f"lease {state})"
        )
    print(
        f"{'NODE':<24} {'STATE':<6} {'LEADER':<6} {'TARGETS':>7}  {'LAST HEARTBEAT':<24}"
        f" {'AGE':>7}  {'CONFIG':<12} {'VERSION':<10} LISTEN"
    )
    for member in found["members"]:
        targets = "?" if member["targets"] is None else str(member["targets"])
        config = member["config_digest"][:12] + ("" if member["same_config"] else " (differs)")
        print(
            f"{member['node']:<24} {'alive' if member['alive'] else 'dead':<6} "
            f"{'yes' if member['leader'] else '':<6} {targets:>7}  "
            f"{_when(member['last_heartbeat']):<24} {member['heartbeat_age_seconds']:>6.1f}s  "
            f"{config:<12} {member['version']:<10} {member['listen']}"
        )


async def _oncall(args: argparse.Namespace) -> None:
    if args.action == "override":
        await _override(args)
        return
    query = f"?at={quote(args.at)}" if args.at else ""
    found = await _call(args, "GET", f"/api/v1/oncall{query}")
    if not found["schedules"]:
        print("no schedules configured")
    for schedule in found["schedules"]:
        current, coming = schedule["on_call"], schedule["next"]
        now_text = (
            f"{_who(current)} until {_when(current['until'])} [{current['source']}]"
            if current
            else "NOBODY"
        )
        print(f"{schedule['schedule']}: on call {now_text}")
        if coming is not None:
            who = _who(coming["person"]) if coming["person"] else "NOBODY"
            print(f"  next: {who} from {_when(coming['starts_at'])}")
        for gap in schedule["gaps_next_7_days"]:
            print(f"  GAP: nobody on call {_when(gap['starts_at'])} → {_when(gap['ends_at'])}")


def _who(person: dict[str, Any]) -> str:
    return f"{person['name']} ({person['id']})" if person["name"] != person["id"] else person["id"]


async def _override(args: argparse.Namespace) -> None:
    if args.override_action == "list":
        found = await _call(args, "GET", "/api/v1/oncall/overrides")
        for override in found["overrides"]:
            covers = f" covering {_who(override['covers'])}" if override["covers"] else ""
            print(
                f"{override['id']}  {override['schedule']}: {_who(override['person'])}{covers} "
                f"{_when(override['starts_at'])} → {_when(override['ends_at'])} "
                f"{override['reason']}"
            )
        if not found["overrides"]:
            print("no overrides")
        return
    if args.override_action == "delete":
        await _call(args, "DELETE", f"/api/v1/oncall/overrides/{args.id}")
        print(f"deleted {args.id}")
        return
    body = {
        "schedule": args.schedule,
        "person": args.person,
        "covers": args.covers,
        "starts_at": args.start,
        "ends_at": args.end,
        "reason": args.reason,
    }
    parse_override(body)  # checked here first: a clear error, and nothing sent
    made = await _call(args, "POST", "/api/v1/oncall/overrides", body)
    covers = f" covering {_who(made['covers'])}" if made["covers"] else ""
    print(
        f"created {made['id']}: {_who(made['person'])}{covers} on call in {made['schedule']} "
        f"{_when(made['starts_at'])} → {_when(made['ends_at'])}"
    )


# request fields whose option has another name
_OPTIONS = {"starts_at": "--start", "ends_at": "--end"}


def _run(handler: Any) -> Any:
    def command(args: argparse.Namespace) -> int:
        try:
            asyncio.run(handler(args))
        except RemoteError as exc:
            print(f"csp-monitor: {exc}", file=sys.stderr)
            return 1
        except InvalidRequest as exc:
            for issue in exc.issues:
                option = _OPTIONS.get(issue.path, f"--{issue.path.replace('_', '-')}")
                print(f"csp-monitor: {option}: {issue.message}", file=sys.stderr)
            return 2
        return 0

    return command


def add_remote_commands(commands: Any, default_config: str) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", help="the daemon's base URL (default from the config)")
        parser.add_argument("--token", help="API token (default $CSP_MONITOR_TOKEN)")
        parser.add_argument("--config", default=default_config)

    incidents = commands.add_parser("incidents", help="list, show and act on incidents")
    actions = incidents.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="incidents (open by default)")
    listing.add_argument(
        "--state", default="open", choices=["open", "acknowledged", "resolved", "all"]
    )
    listing.add_argument("--customer")
    common(listing)
    for name, text_help in (
        ("show", None),
        ("ack", None),
        ("resolve", "closing note"),
        ("note", "the note"),
        ("vendor-case", "21Vianet case number"),
    ):
        action = actions.add_parser(name, help=f"{name} an incident")
        action.add_argument("id")
        if text_help:
            action.add_argument("text", nargs="?" if name == "resolve" else None, help=text_help)
        common(action)
    incidents.set_defaults(func=_run(_incidents), text=None)

    maintenance = commands.add_parser("maintenance", help="list, add and delete windows")
    windows = maintenance.add_subparsers(dest="action", required=True)
    common(windows.add_parser("list", help="every maintenance window"))
    add = windows.add_parser("add", help="add a window")
    add.add_argument("--start", required=True, help="ISO time with offset, 2026-11-29T02:00+08:00")
    add.add_argument(
        "--duration",
        required=True,
        help="e.g. 2h; at most 31d, or the recurrence's period (1d, 7d, 28d)",
    )
    add.add_argument("--customer")
    add.add_argument("--service")
    add.add_argument("--recurrence", choices=["daily", "weekly", "monthly"])
    add.add_argument("--timezone", default="Asia/Shanghai", help="IANA name (Asia/Shanghai)")
    add.add_argument("--reason", default="", help="at most 1,000 characters")
    common(add)
    delete = windows.add_parser("delete", help="delete a window")
    delete.add_argument("id")
    common(delete)
    common(windows.add_parser("proposed", help="windows Message Center posts propose"))
    confirm = windows.add_parser("confirm", help="make a proposed window maintenance")
    confirm.add_argument("id", help="the post, e.g. MC900001")
    confirm.add_argument("--customer", action="append", help="only for this customer (repeatable)")
    common(confirm)
    maintenance.set_defaults(func=_run(_maintenance))

    oncall = commands.add_parser(
        "oncall", help="who is on call now and next per schedule; overrides"
    )
    oncall.add_argument(
        "--at", help="another time: 2026-12-24T21:00+08:00, or 2026-12-24 21:00 (Beijing time)"
    )
    common(oncall)
    oncall_actions = oncall.add_subparsers(dest="action")
    override = oncall_actions.add_parser("override", help="list, add and delete overrides")
    override_actions = override.add_subparsers(dest="override_action", required=True)
    common(override_actions.add_parser("list", help="the overrides in force and recent"))
    add_override = override_actions.add_parser(
        "add", help='someone covers a schedule: "li.na covers wang.wei tonight"'
    )
    add_override.add_argument("schedule")
    add_override.add_argument("--person", required=True, help="who is on call instead")
    add_override.add_argument("--covers", help="only while the rota has this person")
    add_override.add_argument(
        "--start", required=True, help="2026-12-24 20:00 (the schedule's zone) or with offset"
    )
    add_override.add_argument("--end", required=True, help="2026-12-25 08:00")
    add_override.add_argument("--reason", default="")
    common(add_override)
    delete_override = override_actions.add_parser("delete", help="delete an override")
    delete_override.add_argument("id")
    common(delete_override)
    oncall.set_defaults(func=_run(_oncall), at=None)

    cluster = commands.add_parser("cluster", help="the nodes sharing the store")
    cluster_actions = cluster.add_subparsers(dest="action", required=True)
    common(
        cluster_actions.add_parser(
            "status", help="members, alive or dead, the leader and its epoch, targets per node"
        )
    )
    cluster.set_defaults(func=_run(_cluster))
