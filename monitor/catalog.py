"""The catalog: customers × subscribed services × checks, instantiated as targets.

Building the catalog is the second validation pass: each check's options are
filled with the customer's values (``{customer.tenant_domain}``,
``{customer.tenant_name}``, ``{customer.<var>}``, ``{service.id}``) and
validated again by the check type's own model.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from checks import check_types
from monitor.config import (
    ConfigBase,
    ConfigError,
    ConfigIssue,
    CustomerSpec,
    Placement,
    ServiceSpec,
    SubscriptionSpec,
    Timing,
    check_options,
    format_path,
    issues_from_validation,
    majority,
    max_config_bytes,
    parse_config,
    read_config_bytes,
    read_yaml,
)
from monitor.config_types import share_repeated_parts
from monitor.placeholders import fill, values_for
from monitor.probe import CheckOptions, Target
from monitor.sight_config import canary_targets


@dataclass(frozen=True)
class TargetSpec:
    """Everything the scheduler needs to probe one target."""

    target: Target
    options: CheckOptions
    timing: Timing
    fingerprint: str  # changes when anything that affects probing changes
    # where it is probed from, and how many of them must say down (empty: from one place,
    # whichever node owns it, as without locations)
    locations: tuple[str, ...] = ()
    quorum: int = 0


@dataclass(frozen=True)
class Subscription:
    customer: str
    service: str
    aggregate: str
    target_ids: tuple[str, ...]
    sla_target: float | None = None  # percent: the subscription's, tier's or service's

    @property
    def key(self) -> tuple[str, str]:
        return (self.customer, self.service)


@dataclass
class Catalog:
    config: ConfigBase
    digest: str
    source: str
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    # this node's own view of the world (monitor.canaries): (target, options, timeout)
    canaries: list[tuple[Target, CheckOptions, float]] = field(default_factory=list)

    @functools.cached_property
    def customers(self) -> dict[str, CustomerSpec]:
        return {customer.id: customer for customer in self.config.customers}

    @functools.cached_property
    def services(self) -> dict[str, ServiceSpec]:
        return dict(self.config.services)

    @functools.cached_property
    def located(self) -> frozenset[str]:
        """The targets probed from named locations (most catalogs have none)."""
        return frozenset(tid for tid, spec in self.targets.items() if spec.locations)


def _fingerprint(
    target: Target,
    raw_options: object,
    timing_dump: dict[str, object],
    placement: tuple[Any, ...] = (),
) -> str:
    """What the target's probing depends on: its type, its options as written with the
    placeholders filled (secrets included), its timing, and where it is probed from. The
    validated options follow from the written ones; hashing those instead (dump, fill,
    encode) took half of build_catalog at 50,000 targets."""
    parts: list[Any] = [target.type, raw_options, timing_dump]
    if placement:  # only then: targets without locations keep their fingerprints
        parts.append(placement)
    payload = json.dumps(
        parts,
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _placement(
    config: ConfigBase, service: ServiceSpec, check: Placement
) -> tuple[tuple[str, ...], int]:
    """A check's locations and quorum: the nearest level that sets each (validation made
    sure they fit together)."""
    levels: list[Placement] = [check, service, config.defaults]
    locations = next((level.locations for level in levels if level.locations), None)
    if not locations:
        return (), 0
    quorum = next((level.quorum for level in levels if level.quorum is not None), None)
    return tuple(locations), quorum if quorum is not None else majority(len(locations))


def subscription_values(
    customer: CustomerSpec, subscription: SubscriptionSpec
) -> dict[str, dict[str, str]]:
    """What a subscription's check options may say in placeholders (``{customer.…}``)."""
    return values_for(
        customer.id,
        customer.name,
        customer.tenant_domain,
        customer.tier,
        customer.vars,
        subscription.service,
        subscription.vars,
    )


def build_catalog(config: ConfigBase, digest: str = "", source: str = "config") -> Catalog:
    """Instantiate every target; raise ConfigError listing every problem found."""
    types = check_types()
    catalog = Catalog(config=config, digest=digest, source=source)
    # one problem with a shared check definition is reported once, naming the customers
    problems: dict[ConfigIssue, list[str]] = defaultdict(list)
    defaults = config.defaults.timing()
    # Timing is frozen, and nearly every target has one of a few: one object for each
    # (50,000 targets held 50,000 equal copies), its dump made once for the fingerprints
    timings: dict[tuple[object, ...], tuple[Timing, dict[str, object]]] = {}
    shared_parts: dict[Any, Any] = {}  # see share_repeated_parts
    catalog.canaries, canary_issues = canary_targets(config.monitor.canaries)
    for issue in canary_issues:
        problems[issue].append("")
    for index, customer in enumerate(config.customers):
        for position, subscription in enumerate(customer.subscriptions):
            if not subscription.enabled:
                continue
            service = config.services[subscription.service]
            values = subscription_values(customer, subscription)
            target_ids = []
            for check_position, check in enumerate(service.checks):
                check_path = f"services.{subscription.service}.checks[{check_position}]"
                missing: set[str] = set()
                raw_options = fill(check_options(check), values, missing)
                for placeholder in sorted(missing):
                    problems[
                        ConfigIssue(
                            f"customers[{index}].subscriptions[{position}]",
                            f"{check_path} uses {placeholder}, which customer {customer.id!r} "
                            f"does not define (add it under vars)",
                        )
                    ].append(customer.id)
                if missing:
                    continue
                check_type = types[check.type]
                try:
                    options = check_type.options.model_validate(raw_options)
                except ValidationError as exc:
                    for issue in issues_from_validation(exc, check_type.options):
                        problems[ConfigIssue(f"{check_path}.{issue.path}", issue.message)].append(
                            customer.id
                        )
                    continue
                share_repeated_parts(options, shared_parts)
                timing_values = defaults.override_values(
                    customer, service, check, subscription, subscription.checks.get(check.name)
                )
                shared = timings.get(key := tuple(timing_values.values()))
                if shared is None:
                    timing = Timing(**timing_values)
                    shared = timings[key] = (timing, timing.model_dump())
                timing, timing_dump = shared
                target = Target(customer.id, subscription.service, check.name, check.type)
                locations, quorum = _placement(config, service, check)
                catalog.targets[target.id] = TargetSpec(
                    target,
                    options,
                    timing,
                    _fingerprint(
                        target,
                        raw_options,
                        timing_dump,
                        (locations, quorum) if locations else (),
                    ),
                    locations,
                    quorum,
                )
                target_ids.append(target.id)
            tier = config.tiers.get(customer.tier)
            sla_target = (
                subscription.sla_target or (tier.sla_target if tier else None) or service.sla_target
            )
            catalog.subscriptions[(customer.id, subscription.service)] = Subscription(
                customer.id,
                subscription.service,
                service.aggregate,
                tuple(target_ids),
                sla_target,
            )
    if problems:
        issues = []
        for issue, customers in problems.items():
            if issue.path.startswith("services.") and len(config.customers) > 1:
                shown = ", ".join(sorted(set(customers))[:5])
                more = len(set(customers)) - 5
                suffix = f" (for customer{'s' if len(set(customers)) > 1 else ''} {shown}"
                suffix += f" and {more} more)" if more > 0 else ")"
                issue = ConfigIssue(issue.path, issue.message + suffix)
            issues.append(issue)
        raise ConfigError(issues, source)
    return catalog


def load_catalog(
    path: str | Path, env: dict[str, str] | None = None, *, max_bytes: int | None = None
) -> Catalog:
    """Read, validate and instantiate a config file. Raises ConfigError.

    ``max_bytes`` limits the file's size (default: ``max_config_bytes()``)."""
    source = str(path)
    data, text = read_config_bytes(Path(path), max_config_bytes(max_bytes))
    digest = hashlib.sha256(data).hexdigest()
    revealed: set[str] = set()
    config = parse_config(read_yaml(text, source), source, env, revealed)
    try:
        return build_catalog(config, digest, source)
    except ConfigError as exc:  # a reference filled into a check's options via vars
        raise exc.redacted(revealed) from None


__all__ = ["Catalog", "Subscription", "TargetSpec", "build_catalog", "format_path", "load_catalog"]
