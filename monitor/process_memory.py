"""The process's memory, set for a long-running daemon: the collector and glibc's allocator.

``freeze_long_lived_objects``: what start-up builds is moved out of the collector's sight.

``tune_malloc``: fewer arenas, a fixed mmap threshold.

``release_closed_transports``: on Python 3.11, a closed connection no longer waits for
the cycle collector.

Python's own objects come from pymalloc; what is larger than 512 bytes comes from glibc
(the series tables' lists, a scrape's chunks of about 1 MB, the store's result buffers).
Two of glibc's defaults keep memory resident that is no longer used:

* each thread that allocates gets an arena of its own, up to eight per core (the store's
  thread, the heartbeat's, the loop's executor), and freed space in one is not reused by
  another;
* the mmap threshold rises after the first large block is freed, so that later large
  blocks, a scrape's chunks among them, come from the heap, whose freed space is
  returned to the system only from its top.

At 50,000 targets (``python -m bench.scale --targets 50000``, same machine load) the
largest RSS went 585 -> 550 MiB with both set. ``MALLOC_ARENA_MAX`` and
``MALLOC_MMAP_THRESHOLD_`` in the environment still win: a setting given there is left
alone. Other C libraries are left alone too.
"""

from __future__ import annotations

import asyncio.selector_events
import ctypes
import gc
import platform
import sys
from collections.abc import Mapping
from typing import Any

_M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, fixed so that it no longer rises
_SETTINGS = {
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, ARENAS),
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
}


def tune_malloc(env: Mapping[str, str]) -> list[str]:
    """Apply the settings the environment does not give; return those applied (as the
    environment variables that would set them). Best called before threads start."""
    if platform.libc_ver()[0] != "glibc":
        return []
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return [
        name
        for name, (parameter, value) in _SETTINGS.items()
        if name not in env and mallopt(parameter, value) == 1  # 1: done, 0: refused
    ]


def freeze_long_lived_objects() -> None:
    """Move the catalog, jobs and series built at start-up out of the collector's sight.

    With 10,000 targets a full collection walks hundreds of thousands of
    long-lived objects and stalls the loop for 300 ms or more (bench/scale.py);
    frozen, they are never scanned again.
    """
    gc.unfreeze()  # what a reload replaced must be collectable again
    gc.collect()
    gc.freeze()
    # Probing allocates short-lived objects quickly; at the default thresholds the full
    # collections this triggers (every few seconds, ~100 ms each at 10,000 targets) are the
    # longest stalls left. Collect young objects less often and the old ones far less.
    # At 50,000 targets (1,667 probes/s) young collections at 20,000 still took 23 % of
    # the CPU, rescanning the runs in flight each time; at 100,000 they take 10 %
    # (bench/scale.py --gc-threshold, bench/README.md).
    gc.set_threshold(100_000, 50, 100)


def release_closed_transports() -> bool:
    """On Python 3.11, let a closed socket transport go as soon as its last reference does.

    asyncio's selector transport keeps a bound method of itself (``_read_ready_cb``), so
    every closed connection, one per probe, is a reference cycle of some seven objects
    that only the cycle collector frees. At 50,000 targets each young collection (every
    6 s or so) freed some 10,000 of them at once and held the event loop 150–200 ms
    (bench/README.md). Python 3.12 clears the method on close (CPython gh-100348); this
    clears it once the connection is lost, when no read can be dispatched to it any
    more. Applied once per process; returns whether it was applied now."""
    transport: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
    if (
        sys.version_info >= (3, 12)
        or transport is None
        or not hasattr(transport, "_call_connection_lost")
        or getattr(transport, "_csp_monitor_releases_read_callback", False)
    ):
        return False
    connection_lost = transport._call_connection_lost

    def _call_connection_lost(self: Any, exc: BaseException | None) -> None:
        try:
            connection_lost(self, exc)
        finally:
            self._read_ready_cb = None

    transport._call_connection_lost = _call_connection_lost
    transport._csp_monitor_releases_read_callback = True
    return True
