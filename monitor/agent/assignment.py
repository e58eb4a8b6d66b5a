"""An agent's assignment: the targets of its location, as the server's catalog has them.

The server (``assignment_for``) lists every target whose locations include the
agent's, with the check's options as the catalog built them from the config
(placeholders filled, ``${ENV}`` and ``file:`` references resolved: the agent
holds no config and no secrets of its own, and sees only those of its
location's checks). The agent (``targets_from``) turns the document back into
the same ``TargetSpec`` objects the daemon schedules, validated by the same
check plugins, so an agent probes exactly as a node of that location would.

The document's ``version`` changes whenever anything in it does, so an agent
asks with ``If-None-Match`` and rebuilds its schedule only when it must.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError

from checks import check_types
from monitor.catalog import Catalog, TargetSpec, subscription_values
from monitor.config import Timing, check_options
from monitor.placeholders import fill
from monitor.probe import Target

FORMAT = 1  # of the document; an agent refuses another


def assignment_for(catalog: Catalog, location: str) -> dict[str, Any]:
    """The targets listed for ``location``, each with everything needed to probe it."""
    config = catalog.config
    targets: list[dict[str, Any]] = []
    for customer in config.customers:
        for subscription in customer.subscriptions:
            if not subscription.enabled:
                continue
            service = config.services[subscription.service]
            values: dict[str, dict[str, str]] | None = None
            for check in service.checks:
                target = Target(customer.id, subscription.service, check.name, check.type)
                spec = catalog.targets.get(target.id)
                if spec is None or location not in spec.locations:
                    continue
                if values is None:
                    values = subscription_values(customer, subscription)
                targets.append(
                    {
                        "customer": target.customer,
                        "service": target.service,
                        "check": target.check,
                        "type": target.type,
                        "options": fill(check_options(check), values, set()),
                        "timing": spec.timing.model_dump(),
                        "locations": list(spec.locations),
                        "quorum": spec.quorum,
                        "fingerprint": spec.fingerprint,
                    }
                )
    version = hashlib.sha256(
        json.dumps([location, [t["fingerprint"] for t in targets]]).encode()
    ).hexdigest()[:20]
    return {"format": FORMAT, "location": location, "version": version, "targets": targets}


class AssignmentError(Exception):
    """A document this agent cannot use at all (another format, not a document)."""


def targets_from(document: Any) -> tuple[dict[str, TargetSpec], list[str]]:
    """The targets of an assignment, and a line for each one this agent cannot probe (a
    check type it does not have, options its plugin refuses: a newer server)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AssignmentError(f"not an assignment of format {FORMAT}")
    types = check_types()
    specs: dict[str, TargetSpec] = {}
    problems: list[str] = []
    for item in document.get("targets", []):
        try:
            target = Target(item["customer"], item["service"], item["check"], item["type"])
            if target.type not in types:
                problems.append(f"{target.id}: this agent has no check type {target.type!r}")
                continue
            options = types[target.type].options.model_validate(item["options"])
            timing = Timing.model_validate(item["timing"])
            specs[target.id] = TargetSpec(
                target,
                options,
                timing,
                str(item["fingerprint"]),
                tuple(item["locations"]),
                int(item["quorum"]),
            )
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            # never the options in the message: they may hold secrets
            what = item.get("check", "?") if isinstance(item, dict) else "?"
            problems.append(f"target {what!r}: cannot use it ({type(exc).__name__})")
    return specs, problems
