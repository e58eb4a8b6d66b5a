"""Runs one probe under a timeout and turns every outcome into a ProbeResult.

This is where the plugin contract is enforced: a timeout is a failed probe,
an exception is a plugin bug (``unknown``), and a success slower than the
latency threshold is ``degraded``. Plugins do not repeat any of this.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

import checks.http
from checks import CheckType
from monitor import local_failures
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target

if TYPE_CHECKING:
    from monitor.catalog import TargetSpec

log = logging.getLogger(__name__)


def new_http_session(source_address: str | None = None) -> aiohttp.ClientSession:
    """The HTTP client shared by all probes.

    A new connection per probe (``force_close``), as blackbox_exporter does, so
    every probe measures connect and TLS time and a dead backend behind a
    keep-alive connection cannot hide. No connection limit: the scheduler caps
    concurrency. DNS answers are cached briefly; the ``dns`` check measures DNS.
    ``source_address``: connections leave from this local address (a location's link).
    """
    connector = checks.http.ProbeConnector(
        force_close=True,
        limit=0,
        ttl_dns_cache=10,
        local_addr=(source_address, 0) if source_address else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        trust_env=False,
        trace_configs=[checks.http.trace_config()],
    )


def format_seconds(value: float) -> str:
    return f"{value:g}s" if value == int(value) else f"{value:.3g}s"


def probe_context(
    spec: TargetSpec,
    http: aiohttp.ClientSession,
    wall: Callable[[], float],
    ssl_contexts: dict[tuple[bool, str | None, bool], ssl.SSLContext],
    cache: dict[str, Any],
    source_address: str | None,
) -> ProbeContext:
    """What one probe of ``spec`` runs with: the prober's shared session, TLS contexts and
    cache, the address it connects from, and the target's own timeout and latency limit."""
    return ProbeContext(
        http=http,
        timeout=spec.timing.timeout,
        degraded_latency=spec.timing.degraded_latency,
        wall=wall,
        ssl_contexts=ssl_contexts,
        cache=cache,
        source_address=source_address,
    )


async def run_probe(
    check_type: CheckType, target: Target, options: CheckOptions, ctx: ProbeContext
) -> ProbeResult:
    started_wall = ctx.wall()
    started = time.perf_counter()
    errors, token = local_failures.start_probe()
    timed_out = False
    try:
        # asyncio.timeout runs the probe in this task; wait_for would start a task per probe
        async with asyncio.timeout(ctx.timeout):
            result = await check_type.probe(target, options, ctx)
    except TimeoutError:
        timed_out = True
        result = ProbeResult(
            success=False,
            reason=f"timeout after {format_seconds(ctx.timeout)}",
            duration=time.perf_counter() - started,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if local_failures.local_reason(exc) is None:  # ours (EMFILE …) is no plugin bug
            log.exception("event=plugin_error target=%s type=%s", target.id, target.type)
        local_failures.note(exc)
        result = ProbeResult(
            success=False,
            plugin_error=True,
            reason=f"check plugin error: {type(exc).__name__}: {exc}",
            duration=time.perf_counter() - started,
        )
    finally:
        local_failures.end_probe(token)
    local_failures.classify(result, errors, timed_out=timed_out)
    result.started_at = started_wall
    if not result.success and check_type.failure_is_unknown:
        result.inconclusive = True
    if result.success and not result.degraded and ctx.slow(result.duration):
        assert ctx.degraded_latency is not None
        result.degraded = True
        result.reason = (
            f"slow: {format_seconds(result.duration)} > {format_seconds(ctx.degraded_latency)}"
        )
    return result
