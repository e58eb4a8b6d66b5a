"""The HTTP server's listening socket, bounded so that clients cannot starve the probes.

Every accepted connection holds a file descriptor, and so does every probe. With a
soft ``RLIMIT_NOFILE`` of 1024, a thousand idle connections to the API port would
leave the probes none, and every customer would go ``down``. aiohttp has no
connection cap, so this module puts one in front of its protocol factory:

* at most ``monitor.max_connections`` connections are kept; a connection beyond
  that is closed as soon as it is accepted (the newest is the one refused: the
  ones already served keep working);
* a connection that has not sent complete request headers within
  ``monitor.header_timeout`` of being accepted is closed (idle and dripping
  clients); idle keep-alive connections are closed after the same time.

:func:`check_file_limit` warns at start-up when the process may open fewer files
than the probes and the API can need.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

# Descriptors besides probes and API connections: the store, logs, the file channel,
# canaries, the event loop's own. Each probe may need two (happy eyeballs, a resolver).
FILE_MARGIN = 256
FILES_PER_PROBE = 2
_HEADERS_END = b"\r\n\r\n"


def files_needed(max_concurrency: int, max_connections: int) -> int:
    """``LimitNOFILE`` for these caps: 2 × max_concurrency + max_connections + 256."""
    return FILES_PER_PROBE * max_concurrency + max_connections + FILE_MARGIN


def check_file_limit(max_concurrency: int, max_connections: int) -> bool:
    """Log a warning when the soft RLIMIT_NOFILE is below what the caps need; True if fine."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = files_needed(max_concurrency, max_connections)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "event=file_limit_low rlimit_nofile=%d needed=%d max_concurrency=%d "
            "max_connections=%d action=%r",
            soft,
            needed,
            max_concurrency,
            max_connections,
            f"raise the limit to {needed} (systemd: LimitNOFILE={needed}; shell: ulimit -n "
            f"{needed}) or lower monitor.max_concurrency: out of descriptors, probes "
            "are unknown",
        )
        return False
    return True


class ApiServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "csp_monitor_api_connections", "Open connections to the HTTP server", registry=registry
        )
        self.closed = Counter(
            "csp_monitor_api_connections_closed",
            "Connections the HTTP server closed to protect the probes, by reason "
            "(limit: over monitor.max_connections; header_timeout: headers too slow)",
            ["reason"],
            registry=registry,
        )
        for reason in ("limit", "header_timeout"):
            self.closed.labels(reason)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted by the gate and timed until its
    first request's headers are complete."""

    def __init__(self, inner: Any, gate: BoundedSite) -> None:
        self._inner = inner
        self._gate = gate
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's are not asyncio.Transport subclasses, so no isinstance
        self._transport = cast(asyncio.Transport, transport)
        if not self._gate.admit():
            self._transport.abort()  # frees the descriptor at once; nothing was read
            return
        self._admitted = True
        self._timer = asyncio.get_running_loop().call_later(
            self._gate.header_timeout, self._headers_late
        )
        self._inner.connection_made(transport)

    def _headers_late(self) -> None:
        self._timer = None
        self._gate.metrics.closed.labels("header_timeout").inc()
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._timer is not None:
            seen = self._tail + data
            if _HEADERS_END in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self._admitted:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self._gate.release()
            self._inner.connection_lost(exc)


class BoundedSite:
    """Listens on host:port for an aiohttp ``AppRunner`` with a connection cap and a
    header timeout (in place of ``web.TCPSite``)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout: float,
        metrics: ApiServerMetrics,
    ) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.metrics = metrics
        self.active = 0
        self._server: asyncio.Server | None = None

    def admit(self) -> bool:
        if self.active >= self.max_connections:
            self.metrics.closed.labels("limit").inc()
            return False
        self.active += 1
        self.metrics.connections.set(self.active)
        return True

    def release(self) -> None:
        self.active -= 1
        self.metrics.connections.set(self.active)

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None, "the runner must be set up first"
        return _Guarded(server(), self)

    async def start(self) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, reuse_address=True, backlog=128
        )
        sockets = list(self._server.sockets or ())
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def stop(self) -> None:
        """Stop accepting; the runner's cleanup closes the connections it serves."""
        if self._server is not None:
            self._server.close()
            self._server = None
