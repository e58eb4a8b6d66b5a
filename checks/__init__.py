"""Check plugins: one module per probe type.

The registry below is the single list of built-in types; config validation,
the JSON Schema and the scheduler all read it. Third-party packages add types
through the entry-point group ``csp_monitor.checks``, each entry pointing at a
module that follows the same contract as the built-ins (``Options``, ``probe``
and optionally ``METRIC_HELP``, ``FAILURE_IS_UNKNOWN`` and ``target_address``).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target

BUILTIN_CHECKS: Mapping[str, str] = {
    "http": "checks.http",
    "tcp": "checks.tcp",
    "tls": "checks.tls",
    "icmp": "checks.icmp",
    "dns": "checks.dns",
    "smtp": "checks.smtp",
    "token": "checks.token",
    "m365_health": "checks.m365_health",
    "m365_messages": "checks.m365_messages",
    "azure_resource_health": "checks.azure_resource_health",
}
ENTRY_POINT_GROUP = "csp_monitor.checks"

ProbeFn = Callable[[Target, Any, ProbeContext], Awaitable[ProbeResult]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckType:
    """A loaded check plugin."""

    name: str
    options: type[CheckOptions]
    probe: ProbeFn
    metric_help: Mapping[str, str] = field(default_factory=dict)
    # A failure of this check says nothing about the service (it reads a vendor's API):
    # the runner records it as unknown, never down.
    failure_is_unknown: bool = False
    # what a target of this type probes, for the `target` label: options → "host:443"
    address: Callable[[Any], str] = field(default=lambda options: default_address(options))

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> CheckType:
        options = getattr(module, "Options", None)
        probe = getattr(module, "probe", None)
        if not (isinstance(options, type) and issubclass(options, CheckOptions)):
            raise TypeError(f"check plugin {module.__name__}: Options must subclass CheckOptions")
        if not callable(probe):
            raise TypeError(f"check plugin {module.__name__}: no probe() function")
        return cls(
            name,
            options,
            probe,
            getattr(module, "METRIC_HELP", {}),
            bool(getattr(module, "FAILURE_IS_UNKNOWN", False)),
            getattr(module, "target_address", default_address),
        )


@functools.cache
def check_types() -> Mapping[str, CheckType]:
    """Every available check type: the built-ins, then installed third-party ones."""
    types = {
        name: CheckType.from_module(name, importlib.import_module(path))
        for name, path in BUILTIN_CHECKS.items()
    }
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in types:
            log.warning("event=plugin_ignored type=%s reason=name_taken", entry.name)
            continue
        try:
            types[entry.name] = CheckType.from_module(entry.name, entry.load())
        except Exception as exc:  # a broken third-party plugin must not stop the daemon
            log.error("event=plugin_load_failed type=%s error=%r", entry.name, exc)
    return types


def default_address(options: Any) -> str:
    """What a check probes, as blackbox's ``target`` would name it: the URL (without
    credentials, query or fragment: they may hold secrets), ``host:port``, the host, or
    the DNS name asked; "" when the options name none of these."""
    for name in ("url", "token_url", "authority", "graph_base", "arm_base"):
        value = getattr(options, name, None)
        if value:
            return safe_url(str(value))
    host = getattr(options, "host", None)
    if host:
        port = getattr(options, "port", None)
        if port is None:
            return str(host)
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    query = getattr(options, "query", None)
    return str(query) if query else ""


def safe_url(url: str) -> str:
    """``url`` without user name, password, query or fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
