"""``csp-monitor agent``: probe for a location from a host without access to the database."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

TOKEN_ENV = "CSP_MONITOR_AGENT_TOKEN"


def _token(args: argparse.Namespace) -> str | None:
    """The token: ``--token-file``, else ``$CSP_MONITOR_AGENT_TOKEN``, else ``--token`` (which
    other users of the host can read in the process list)."""
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    return os.environ.get(TOKEN_ENV) or args.token


def cmd_agent(args: argparse.Namespace) -> int:
    from monitor.agent.runner import Agent
    from monitor.logs import setup_logging

    try:
        token = _token(args)
    except OSError as exc:
        print(f"csp-monitor agent: cannot read the token file: {exc.strerror}", file=sys.stderr)
        return 2
    if not token:
        print(
            f"csp-monitor agent: a token of role agent is needed: --token-file FILE or {TOKEN_ENV}",
            file=sys.stderr,
        )
        return 2
    if not args.server.startswith(("http://", "https://")):
        print("csp-monitor agent: --server is a URL (https://node:9108)", file=sys.stderr)
        return 2
    if not (
        0.05 <= args.push_every <= 300
        and 1 <= args.reload_every <= 3600
        and 100 <= args.buffer <= 10_000_000
    ):
        print(
            "csp-monitor agent: --push-every is 0.05–300 s, --reload-every 1–3600 s, "
            "--buffer 100–10,000,000 results",
            file=sys.stderr,
        )
        return 2
    setup_logging("keyvalue", args.log_level)
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    agent = Agent(
        args.server,
        args.location,
        token,
        name=args.name,
        source_address=args.source_address,
        push_every=args.push_every,
        reload_every=args.reload_every,
        buffer_limit=args.buffer,
        ssl_context=context,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        await agent.run()

    asyncio.run(run())
    return 0


def add_agent_command(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="probe for one location and push the results to a node's API",
        description="Pulls the checks of LOCATION from the server, probes them and pushes "
        "the results (buffered while the server is unreachable). The token (role agent) "
        f"comes from --token-file or ${TOKEN_ENV}.",
    )
    agent.add_argument("--server", required=True, help="a node's API, e.g. https://node:9108")
    agent.add_argument("--location", required=True, help="the location probed for")
    agent.add_argument("--token-file", help="a file holding the agent's token")
    agent.add_argument(
        "--token", help=f"the token itself (visible in the process list: prefer ${TOKEN_ENV})"
    )
    agent.add_argument(
        "--name", default=socket.gethostname() or "agent", help="this agent's name (host name)"
    )
    agent.add_argument("--source-address", help="the local address probes connect from")
    agent.add_argument("--ca-file", help="CA bundle that signed the server's certificate")
    agent.add_argument("--push-every", type=float, default=1.0, help="seconds between pushes")
    agent.add_argument(
        "--reload-every", type=float, default=30.0, help="seconds between assignment checks"
    )
    agent.add_argument(
        "--buffer", type=int, default=100_000, help="results kept while the server is away"
    )
    agent.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    agent.set_defaults(func=cmd_agent)
