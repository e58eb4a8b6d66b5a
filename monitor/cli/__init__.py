"""``csp-monitor`` command line: run, validate, schema, probe."""

# The commands by group: those that work from the config file (local.py), those that act
# on a running daemon through its HTTP API (remote.py), reports and the audit log
# (reports.py). The docstring above is the parser's description.

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from monitor import __version__
from monitor.cli.agent import add_agent_command
from monitor.cli.local import add_local_commands
from monitor.cli.remote import add_remote_commands
from monitor.cli.reports import add_report_commands

DEFAULT_CONFIG = os.environ.get("CSP_MONITOR_CONFIG", "config.yaml")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``csp-monitor`` command."""
    parser = argparse.ArgumentParser(prog="csp-monitor", description=__doc__)
    parser.add_argument("--version", action="version", version=f"csp-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_local_commands(commands, DEFAULT_CONFIG)
    add_remote_commands(commands, DEFAULT_CONFIG)
    add_report_commands(commands, DEFAULT_CONFIG)
    add_agent_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (default: the process's arguments); its exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
