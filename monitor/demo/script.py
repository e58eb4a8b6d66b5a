"""What happens in the demo world, and when: one customer's web app fails, another's
SharePoint slows, Exchange fails for all three (a vendor-side incident), the on-call
engineer acknowledges and tells the customers, then everything recovers.

``pace`` divides every time (a test runs the script faster than a person watches it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from monitor.demo.world import CUSTOMERS, Behaviour, World
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.incident_manager import IncidentManager

log = logging.getLogger(__name__)
ACTOR = "demo script"


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after the start, at pace 1
    says: str  # what the terminal prints
    act: Callable[[World, IncidentManager], object]  # may return an awaitable


def _incident(manager: IncidentManager, customer: str, service: str) -> str | None:
    found = [i for i in manager.open_incidents() if i.customer == customer and i.service == service]
    return found[0].id if found else None


async def _acknowledge(world: World, manager: IncidentManager) -> None:
    incident_id = _incident(manager, "contoso", "web-app")
    if incident_id is not None:
        await manager.acknowledge(incident_id, ACTOR)


async def _tell_customers(world: World, manager: IncidentManager) -> None:
    incident_id = _incident(manager, VENDOR_CUSTOMER, "exchange-online")
    if incident_id is not None:
        await manager.add_customer_update(
            incident_id,
            ACTOR,
            "identified",
            "Outlook on the web does not open; mail delivery is not affected. 21Vianet is "
            "restoring the service and we follow it closely. / Outlook 网页版无法打开，"
            "邮件收发不受影响。世纪互联正在恢复服务，我们会持续跟进。",
        )


STEPS = (
    Step(
        10,
        "Contoso's web app answers 503: its cell turns red, an incident opens",
        lambda world, manager: world.set(["contoso"], "web-app", Behaviour.FAILING),
    ),
    Step(
        10,
        "Fabrikam's SharePoint answers slowly: degraded",
        lambda world, manager: world.set(["fabrikam"], "sharepoint-online", Behaviour.SLOW),
    ),
    Step(
        30,
        "Exchange Online fails for all three customers: one vendor-side incident",
        lambda world, manager: world.set(list(CUSTOMERS), "exchange-online", Behaviour.FAILING),
    ),
    Step(50, "The script acknowledges Contoso's web app incident", _acknowledge),
    Step(
        55,
        "The script posts a customer update on the vendor-side incident "
        "(e-mails in outbox/customers)",
        _tell_customers,
    ),
    Step(
        90,
        "Everything recovers: incidents resolve, resolution messages are written",
        lambda world, manager: world.recover(),
    ),
)


async def play(
    world: World, manager: IncidentManager, pace: float, say: Callable[[str], None]
) -> None:
    """Run the steps on time; a step that fails is said and skipped, not fatal."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in STEPS:
        delay = start + step.at / pace - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        say(f"[{step.at:>3.0f} s] {step.says}")
        try:
            outcome = step.act(world, manager)
            if asyncio.iscoroutine(outcome):
                await outcome
        except Exception as exc:  # the demo goes on: the person sees what did not work
            log.warning("event=demo_step_failed step=%r error=%r", step.says, str(exc))
    say("The script is over; the world stays healthy. Press Ctrl-C to stop.")
