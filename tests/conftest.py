"""Shared fixtures: a probe context with a real HTTP client, free local ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from monitor.probe import ProbeContext
from monitor.runner import new_http_session


@pytest.fixture
async def probe_ctx() -> AsyncIterator[ProbeContext]:
    session = new_http_session()
    try:
        yield ProbeContext(http=session, timeout=5.0)
    finally:
        await session.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
