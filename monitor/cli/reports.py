"""CLI commands that read the store directly: ``report`` and ``audit verify``.

They need no running daemon: they open the same database (SQLite in the data
directory, or PostgreSQL) read-only in spirit, and the key files beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from pathlib import Path
from typing import Any

from monitor.alerting import audit_key, store_url
from monitor.catalog import Catalog, load_catalog
from monitor.config import ConfigError
from monitor.reports.build import build_report
from monitor.reports.customer import customer_report_in_worker
from monitor.reports.customer_render import render_customer
from monitor.reports.model import month_of, parse_period
from monitor.reports.render import FORMATS, render
from monitor.store import Store, StoreError


async def _report(catalog: Catalog, base: Path, args: argparse.Namespace) -> str | bytes:
    zone = catalog.config.reports.timezone
    period = parse_period(args.period, zone) if args.period else month_of(time.time(), zone, -1)
    if args.customer and args.customer not in catalog.customers:
        raise ValueError(
            f"unknown customer {args.customer!r} (known: {', '.join(sorted(catalog.customers))})"
        )
    if args.audience == "customer" and not args.customer:
        raise ValueError("--audience customer previews one customer's report: give --customer")
    fmt = args.format or ("html" if args.audience == "auditor" else "text")
    allowed = FORMATS if args.audience == "auditor" else ("html", "pdf", "text")
    if fmt not in allowed:
        raise ValueError(f"--format {fmt} is not one of {', '.join(allowed)} for this audience")
    directories = (
        [base / catalog.config.notifications.templates_dir]
        if catalog.config.notifications.templates_dir
        else []
    )
    store = await Store.open(store_url(catalog, base))
    try:
        if args.audience == "customer":  # the preview of what the customer will be sent
            return await customer_report_in_worker(
                store,
                catalog,
                period,
                args.customer,
                functools.partial(render_customer, fmt=fmt, directories=directories),
                now=time.time(),
            )
        report = await build_report(store, catalog, period, now=time.time(), customer=args.customer)
    finally:
        await store.close()
    return render(report, fmt, directories)[1]


def cmd_report(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args.config)
        body = asyncio.run(_report(catalog, Path(args.config).resolve().parent, args))
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        return 2
    except (ValueError, StoreError) as exc:
        print(f"csp-monitor: {exc}", file=sys.stderr)
        return 2
    data = body.encode() if isinstance(body, str) else body
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output}")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


async def _verify(
    catalog: Catalog, base: Path, head: tuple[int, str] | None
) -> tuple[int, list[Any], tuple[int, str]]:
    store = await Store.open(store_url(catalog, base))
    try:
        key = audit_key(catalog, base)
        checked, problems = await store.verify_audit(key, head)
        return checked, problems, await store.audit_head()
    finally:
        await store.close()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    head: tuple[int, str] | None = None
    if args.head:
        seq, _, digest = args.head.partition(":")
        if not seq.isdigit():
            print("csp-monitor: --head is SEQ:HASH, as a report prints it", file=sys.stderr)
            return 2
        head = (int(seq), digest)
    try:
        catalog = load_catalog(args.config)
        checked, problems, current = asyncio.run(
            _verify(catalog, Path(args.config).resolve().parent, head)
        )
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"csp-monitor: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(
            f"audit log: {len(problems)} problem{'s' if len(problems) != 1 else ''} "
            f"in {checked} entries",
            file=sys.stderr,
        )
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"audit log OK: {checked} entries, head {current[0]}:{current[1]}")
    return 0


def add_report_commands(commands: Any, default_config: str) -> None:
    report = commands.add_parser(
        "report", help="uptime and SLA report for auditors, or a customer's monthly report"
    )
    report.add_argument("--period", help="2026-10, or 2026-10-01..2026-10-15 (default: last month)")
    report.add_argument("--customer", help="one customer (default: all)")
    report.add_argument(
        "--audience",
        default="auditor",
        choices=["auditor", "customer"],
        help="customer: preview the monthly service report the customer's contacts get",
    )
    report.add_argument(
        "--format",
        choices=sorted({*FORMATS, "text"}),
        help="auditor: html (default), pdf, csv, json; customer: text (default), html, pdf",
    )
    report.add_argument("--output", "-o", help="file to write (default: standard output)")
    report.add_argument("--config", default=default_config)
    report.set_defaults(func=cmd_report)

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    actions = audit.add_subparsers(dest="action", required=True)
    verify = actions.add_parser("verify", help="check every entry of the hash chain")
    verify.add_argument(
        "--head",
        help="SEQ:HASH recorded earlier (e.g. in a report): a log "
        "that ends before it was truncated",
    )
    verify.add_argument("--config", default=default_config)
    verify.set_defaults(func=cmd_audit_verify)
