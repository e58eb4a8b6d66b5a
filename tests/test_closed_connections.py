"""A probe's closed connection is freed when it closes, not left to the cycle collector.

On Python 3.11 each closed socket transport was a reference cycle: at 50,000 targets a
young collection freed some 10,000 of them at once and held the event loop 150–200 ms
(``monitor.process_memory.release_closed_transports``, bench/README.md).
"""

from __future__ import annotations

import asyncio
import gc

from checks import check_types
from monitor.probe import ProbeContext, Target
from monitor.process_memory import release_closed_transports
from monitor.runner import new_http_session, run_probe
from tests.conftest import WebTarget

PROBES = 50


def transports_in_cycles() -> int:
    """Socket transports only the cycle collector would have freed, found by collecting."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(type(thing).__name__ == "_SelectorSocketTransport" for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_probes_leave_no_connection_for_the_cycle_collector(web_target: WebTarget) -> None:
    release_closed_transports()  # as the daemon and the agent do at start
    http = check_types()["http"]
    options = http.options.model_validate({"url": web_target.url})
    target = Target("contoso", "web-app", "health", "http")
    session = new_http_session()
    try:
        context = ProbeContext(http=session, timeout=5.0)
        gc.collect()
        gc.disable()
        try:
            results = [await run_probe(http, target, options, context) for _ in range(PROBES)]
            await asyncio.sleep(0.1)  # each connection's loss is handled a loop turn later
            left = transports_in_cycles()
        finally:
            gc.enable()
    finally:
        await session.close()
    assert all(result.success for result in results)
    assert web_target.requests == PROBES
    assert left == 0
