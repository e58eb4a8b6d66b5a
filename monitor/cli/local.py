"""``csp-monitor`` commands that work from the config file: run, validate, schema,
probe and simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from checks import check_types
from monitor.catalog import Catalog, TargetSpec, load_catalog
from monitor.cli.locations_view import cluster_reports, location_lines
from monitor.config import (
    DEFAULT_MAX_CONFIG_BYTES,
    MAX_CONFIG_BYTES_ENV,
    ConfigError,
    json_schema,
)
from monitor.config_check import check_config
from monitor.engine.quorum import LocationReport
from monitor.probe import ProbeContext, ProbeResult, Status
from monitor.runner import new_http_session, run_probe
from monitor.status import aggregate, observed_status


def _event_loop_policy(choice: str = "asyncio") -> None:
    """The standard loop unless the config asks for uvloop.

    uvloop makes a bare probing loop about 20 % cheaper. Inside the daemon
    bench/probe_cpu.py first measured no gain (0.93×, 0.86–1.28); since probes
    are scheduled by slot and run by workers, bench/scale.py at 50,000 targets
    measured 397 µs per probe against 460–505 µs on the standard loop, which is
    what kept the lag within 250 ms there. It stays a choice, for the large
    nodes that need it: the test suite runs the standard loop.
    """
    if choice != "uvloop":
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon
    from monitor.logs import setup_logging

    try:
        catalog = check_config(args.config, max_bytes=args.max_config_bytes).catalog
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        print(
            "csp-monitor: not started; fix the problems above (csp-monitor validate "
            f"{args.config})",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # an operator gets a sentence, not a traceback
        print(_unexpected(args.config, exc), file=sys.stderr)
        return 2
    settings = catalog.config.monitor
    setup_logging(settings.log_format, settings.log_level)
    _event_loop_policy(settings.event_loop)
    daemon = Daemon(args.config, listen=args.listen, max_config_bytes=args.max_config_bytes)
    try:
        asyncio.run(daemon.run())
    except ConfigError as exc:  # the file changed between the check above and the start
        print(exc.summary(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"csp-monitor: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo.run import run_demo
    from monitor.logs import setup_logging

    if not 0.1 <= args.pace <= 100:
        print("csp-monitor demo: --pace must be between 0.1 and 100", file=sys.stderr)
        return 2
    setup_logging("keyvalue", "error")
    try:
        return asyncio.run(run_demo(args.listen, args.pace, args.keep))
    except OSError as exc:  # the console's port is taken, most likely
        print(f"csp-monitor demo: cannot start: {exc}", file=sys.stderr)
        return 1


def _unexpected(file: str, exc: BaseException) -> str:
    # Only the kind of error: its message could quote a value of the file.
    return (
        f"{file}: could not be checked: unexpected {type(exc).__name__}; "
        "please report it (with the file, its secrets removed)"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        checked = check_config(args.file, max_bytes=args.max_config_bytes)
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        return 1
    except Exception as exc:  # an operator gets a sentence, not a traceback
        print(_unexpected(args.file, exc), file=sys.stderr)
        return 1
    for warning in checked.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    config = checked.catalog.config
    print(
        f"{args.file}: OK: {len(config.customers)} customers, "
        f"{len(config.services)} services, {len(checked.catalog.subscriptions)} subscriptions, "
        f"{len(checked.catalog.targets)} targets, {len(config.escalation_policies)} "
        f"escalation policies, {len(config.channels)} channels; every template renders"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.simulate import load_scenario, simulate

    logging.getLogger().setLevel(logging.ERROR)  # the printed timeline is the output
    try:
        catalog = load_catalog(args.config)
        scenario = load_scenario(Path(args.scenario))
        lines = asyncio.run(simulate(catalog, scenario, Path(args.config).resolve().parent))
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def _format_result(check: str, check_type: str, result: ProbeResult) -> list[str]:
    status = observed_status(result)
    reason = result.reason or ("ok" if result.success else "")
    lines = [
        f"  {check:<16} {check_type:<7} {status.value.upper():<9} "
        f"{result.duration * 1000:8.1f} ms  {reason}"
    ]
    if result.phases:
        phases = "  ".join(f"{name} {value * 1000:.1f} ms" for name, value in result.phases.items())
        lines.append(f"  {'':<16} phases: {phases}")
    for state in result.vendor or []:
        issue = f" {state.issue_id}: {state.title}" if state.issue_id else ""
        lines.append(
            f"  {'':<16} vendor: {state.service} {state.status} "
            f"({state.source}: {state.vendor_status}){issue}"
        )
    if result.facts:
        facts = "  ".join(f"{name}={value:g}" for name, value in sorted(result.facts.items()))
        lines.append(f"  {'':<16} facts:  {facts}")
    return lines


async def _locations(
    catalog: Catalog, spec: TargetSpec, result: ProbeResult, base: Path
) -> list[str]:
    """A located check: this run counts for this node's location, the others' last reports
    come from the cluster's store."""
    here = catalog.config.monitor.location
    try:
        reports = await cluster_reports(catalog, base, [spec.target.id])
    except Exception as exc:  # the probe's own result is still worth printing
        return [f"  {'':<16} locations: cannot read the store ({type(exc).__name__})"]
    found = dict((reports or {}).get(spec.target.id, {}))
    if here in spec.locations:
        found[here] = LocationReport(
            here, observed_status(result), result.reason, time.time(), time.time(), "this run"
        )
    return location_lines(spec, found, here)


async def _probe_subscription(
    catalog: Catalog, customer: str, service: str, base: Path = Path(".")
) -> tuple[list[str], Status]:
    subscription = catalog.subscriptions[(customer, service)]
    settings = catalog.config.monitor
    session = new_http_session(settings.source_address)
    cache: dict[str, Any] = {}  # one token and one vendor read shared by the checks
    lines = [f"{customer} / {service} — {catalog.services[service].name}"]
    statuses = []
    try:
        for target_id in subscription.target_ids:
            spec = catalog.targets[target_id]
            ctx = ProbeContext(
                http=session,
                timeout=spec.timing.timeout,
                degraded_latency=spec.timing.degraded_latency,
                cache=cache,
                source_address=settings.source_address,
            )
            result = await run_probe(
                check_types()[spec.target.type], spec.target, spec.options, ctx
            )
            statuses.append(observed_status(result))
            lines += _format_result(spec.target.check, spec.target.type, result)
            if spec.locations:
                lines += await _locations(catalog, spec, result, base)
    finally:
        await session.close()
    status = aggregate(statuses, subscription.aggregate)
    lines.append(f"subscription status (single run, before thresholds): {status.value}")
    return lines, status


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args.config)
    except ConfigError as exc:
        print(exc.summary(), file=sys.stderr)
        return 2
    if (args.customer, args.service) not in catalog.subscriptions:
        known = sorted(
            service for customer, service in catalog.subscriptions if customer == args.customer
        )
        if not known:
            print(
                f"unknown customer {args.customer!r} (known: "
                f"{', '.join(sorted(catalog.customers))})",
                file=sys.stderr,
            )
        else:
            print(
                f"customer {args.customer!r} does not subscribe to {args.service!r} "
                f"(subscribed: {', '.join(known)})",
                file=sys.stderr,
            )
        return 2
    lines, status = asyncio.run(
        _probe_subscription(
            catalog, args.customer, args.service, Path(args.config).resolve().parent
        )
    )
    print("\n".join(lines))
    return 0 if status is Status.UP else 1


def _add_max_config_bytes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-config-bytes",
        type=int,
        metavar="BYTES",
        help=f"refuse a config file larger than this (default ${MAX_CONFIG_BYTES_ENV} or "
        f"{DEFAULT_MAX_CONFIG_BYTES})",
    )


def add_local_commands(commands: Any, default_config: str) -> None:
    run = commands.add_parser("run", help="run the monitoring daemon")
    run.add_argument("--config", default=default_config, help="config file (default %(default)s)")
    run.add_argument("--listen", help="override monitor.listen (host:port)")
    _add_max_config_bytes(run)
    run.set_defaults(func=cmd_run)

    validate = commands.add_parser("validate", help="check a config file and list every problem")
    validate.add_argument("file", nargs="?", default=default_config)
    _add_max_config_bytes(validate)
    validate.set_defaults(func=cmd_validate)

    schema = commands.add_parser("schema", help="print the config's JSON Schema (for editors)")
    schema.set_defaults(func=cmd_schema)

    probe = commands.add_parser("probe", help="run one subscription's checks once and explain")
    probe.add_argument("customer")
    probe.add_argument("service")
    probe.add_argument("--config", default=default_config)
    probe.set_defaults(func=cmd_probe)

    simulate = commands.add_parser(
        "simulate",
        help="replay a scripted outage through thresholds, incidents and templates "
        "with a fake clock and print every incident change and message",
    )
    simulate.add_argument("scenario", help="scenario YAML (see monitor/simulate.py)")
    simulate.add_argument("--config", default=default_config)
    simulate.set_defaults(func=cmd_simulate)

    demo = commands.add_parser(
        "demo",
        help="the daemon and its console against a simulated world of three customers on "
        "127.0.0.1, with a script of outages (store and outbox in a temporary folder)",
    )
    demo.add_argument(
        "--listen", default="127.0.0.1:9700", help="console address (port 0: any free port)"
    )
    demo.add_argument(
        "--pace", type=float, default=1.0, help="run the script this many times faster"
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder")
    demo.set_defaults(func=cmd_demo)
