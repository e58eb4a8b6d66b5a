"""Validating a parsed config: every problem found, each with its path.

Validation happens in two passes, both collecting every problem:

1. the file against the pydantic models (structure, types, unknown keys, check
   options per check type, cross-references), here;
2. every check instantiated for every subscribing customer (``catalog.py``),
   which catches what only appears once ``{customer.…}`` placeholders are
   filled in.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from checks import check_types
from monitor.channels import CHANNEL_TYPES
from monitor.config.errors import ConfigError, ConfigIssue, format_path
from monitor.config.models import (
    CHECK_BASE_FIELDS,
    ConfigBase,
    config_model,
    shared_specs,
    subscription_shorthand,
    template_model,
)
from monitor.config.references import resolve_secrets
from monitor.config_types import share_repeated_parts
from monitor.placeholders import fill, values_for
from monitor.schedule_config import schedule_reference_issues


def _is_union_tag(loc: tuple[int | str, ...], index: int) -> bool:
    """Pydantic puts a tagged union's tag in error paths; operators never wrote it."""
    if index < 2 or not isinstance(loc[index], str):
        return False
    if loc[index - 2] == "checks" and isinstance(loc[index - 1], int):
        return loc[index] in check_types()
    if loc[index - 2] == "channels" and index == 2:
        return loc[index] in CHANNEL_TYPES
    return False


def _variant(union: Any, tag: Any) -> Any:
    """The member of a union tagged by ``type`` whose tag is ``tag``."""
    for variant in get_args(union):
        field = getattr(variant, "model_fields", {}).get("type")
        if field is not None and tag in get_args(field.annotation):
            return variant
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (for "unknown key" messages)."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif origin in (list, dict):
            current = get_args(current)[-1]
        elif origin in (Union, types.UnionType):  # a check or channel, tagged by its type
            current = _variant(current, part)
            if current is None:
                return []
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def issues_from_validation(
    error: ValidationError, model: type[BaseModel], prefix: tuple[int | str, ...] = ()
) -> list[ConfigIssue]:
    issues = []
    for detail in error.errors(include_input=False, include_url=False):
        issues.extend(_issues_from_detail(detail, model, prefix))
    return issues


def _issues_from_detail(
    detail: ErrorDetails, model: type[BaseModel], prefix: tuple[int | str, ...]
) -> list[ConfigIssue]:
    loc = tuple(detail["loc"])
    kept = tuple(part for i, part in enumerate(loc) if not _is_union_tag(loc, i))
    path = format_path(prefix + kept)
    kind = detail["type"]
    message = detail["msg"]
    ctx = detail.get("ctx", {})
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        message = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        what, names = (
            ("channel", list(CHANNEL_TYPES))
            if loc and loc[0] == "channels"
            else ("check", list(check_types()))
        )
        listed = ", ".join(sorted(names))
        message = (
            f"unknown {what} type {ctx.get('tag')!r} (allowed: {listed})"
            if kind == "union_tag_invalid"
            else f"{what} type is missing (allowed: {listed})"
        )
    return [ConfigIssue(path, message)]


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return (
        [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]
        if isinstance(value, list)
        else []
    )


def cross_reference_issues(raw: dict[str, Any]) -> list[ConfigIssue]:
    """Problems between parts of the file (unknown services, duplicates).

    Works on the raw document, tolerating any structural error, so that these
    problems are reported together with the structural ones.
    """
    issues: list[ConfigIssue] = []
    services = raw.get("services") if isinstance(raw.get("services"), dict) else {}
    assert isinstance(services, dict)
    tiers = raw.get("tiers") if isinstance(raw.get("tiers"), dict) else {}
    assert isinstance(tiers, dict)
    issues += _dependency_issues(services)
    issues += _cluster_issues(_mapping(raw.get("monitor")))
    issues += _placement_issues(_mapping(raw.get("defaults")), services)
    check_names: dict[str, set[Any]] = {}
    for service_id, service in services.items():
        names = check_names.setdefault(service_id, set())
        for position, check in _items(service.get("checks") if isinstance(service, dict) else []):
            name = check.get("name")
            if name in names:
                issues.append(
                    ConfigIssue(
                        f"services.{service_id}.checks[{position}].name",
                        f"duplicate check name {name!r}",
                    )
                )
            names.add(name)
    seen: dict[Any, int] = {}
    for index, customer in _items(raw.get("customers")):
        customer_id = customer.get("id")
        if customer_id in seen:
            issues.append(
                ConfigIssue(
                    f"customers[{index}].id",
                    f"duplicate customer id {customer_id!r} (also customers[{seen[customer_id]}])",
                )
            )
        seen.setdefault(customer_id, index)
        tier = customer.get("tier")
        if tiers and tier is not None and tier not in tiers:
            issues.append(
                ConfigIssue(
                    f"customers[{index}].tier",
                    f"unknown tier {tier!r} (allowed: {', '.join(sorted(tiers))})",
                )
            )
        subscribed: set[str] = set()
        entries = customer.get("subscriptions")
        for position, entry in enumerate(entries if isinstance(entries, list) else []):
            path = f"customers[{index}].subscriptions[{position}]"
            subscription = subscription_shorthand(entry)
            if not isinstance(subscription, dict):
                continue
            service_id = subscription.get("service")
            if not isinstance(service_id, str):
                continue
            if isinstance(entry, dict):
                path += ".service"
            if service_id not in services:
                issues.append(
                    ConfigIssue(
                        path,
                        f"unknown service {service_id!r} (allowed: {', '.join(sorted(services))})",
                    )
                )
                continue
            if service_id in subscribed:
                issues.append(ConfigIssue(path, f"service {service_id!r} is listed twice"))
            subscribed.add(service_id)
            overrides = subscription.get("checks")
            for check_name in overrides if isinstance(overrides, dict) else {}:
                if check_name not in check_names[service_id]:
                    allowed = ", ".join(sorted(str(n) for n in check_names[service_id]))
                    issues.append(
                        ConfigIssue(
                            f"customers[{index}].subscriptions[{position}].checks.{check_name}",
                            f"service {service_id!r} has no check {check_name!r} "
                            f"(allowed: {allowed})",
                        )
                    )
    return issues


def _cluster_issues(monitor: dict[str, Any]) -> list[ConfigIssue]:
    """A cluster shares its state through PostgreSQL: SQLite (one file, one host) cannot."""
    cluster = monitor.get("cluster")
    if cluster is None or (isinstance(cluster, dict) and cluster.get("enabled") is False):
        return []
    issues = [
        # each node would make its own key: links signed by one leader would be refused by
        # the next, and the audit chain would change keys with every change of leader
        ConfigIssue(
            f"monitor.{key}",
            f"a cluster's nodes must share one {what}: set monitor.{key} (e.g. "
            f'"${{CSP_MONITOR_{key.upper()}}}") to the same secret on every node',
        )
        for key, what in (("link_key", "link-signing key"), ("audit_key", "audit chain key"))
        if monitor.get(key) is None
    ]
    store = monitor.get("store")
    if isinstance(store, str) and store.split("://", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    ):
        return issues
    found = f"the store is {store!r}" if isinstance(store, str) else "the store is SQLite"
    return [
        ConfigIssue(
            "monitor.cluster",
            f"a cluster needs a PostgreSQL store shared by its nodes ({found}): set "
            "monitor.store to postgresql://user@host:5432/db, or remove monitor.cluster",
        ),
        *issues,
    ]


def _placement_issues(defaults: dict[str, Any], services: dict[str, Any]) -> list[ConfigIssue]:
    """A check's locations and quorum, taken from the nearest level that sets each, must
    fit together: a quorum needs locations, and no more than there are (each level alone
    is checked by its model; this is about levels combined)."""
    issues: list[ConfigIssue] = []
    for service_id, service in services.items():
        service = _mapping(service)
        for position, check in _items(service.get("checks")):
            levels = [
                (f"services.{service_id}.checks[{position}]", check),
                (f"services.{service_id}", service),
                ("defaults", defaults),
            ]
            locations = next(
                ((p, v["locations"]) for p, v in levels if v.get("locations") is not None), None
            )
            quorum = next(
                ((p, v["quorum"]) for p, v in levels if v.get("quorum") is not None), None
            )
            if quorum is None or not isinstance(quorum[1], int):
                continue
            quorum_path, value = quorum
            if locations is None:
                issues.append(
                    ConfigIssue(
                        f"{quorum_path}.quorum",
                        "a quorum needs locations to agree: add locations here, on the "
                        "service or under defaults",
                    )
                )
            elif (
                isinstance(locations[1], list)
                and locations[1]
                and value > len(locations[1])
                and quorum_path != locations[0]  # the same level: reported by its model
            ):
                issues.append(
                    ConfigIssue(
                        f"services.{service_id}.checks[{position}]",
                        f"quorum {value} (from {quorum_path}.quorum) is more than the "
                        f"{len(locations[1])} locations of {locations[0]}.locations: the "
                        "target could never be down",
                    )
                )
    return list(dict.fromkeys(issues))  # a default's problem once, not once per check


def _dependency_issues(services: dict[str, Any]) -> list[ConfigIssue]:
    """``depends_on`` names known services, not the service itself, and makes no cycle."""
    issues: list[ConfigIssue] = []
    graph: dict[str, list[str]] = {}
    for service_id, service in services.items():
        needs = _mapping(service).get("depends_on")
        for position, needed in enumerate(needs if isinstance(needs, list) else []):
            path = f"services.{service_id}.depends_on[{position}]"
            if needed == service_id:
                issues.append(ConfigIssue(path, "a service cannot depend on itself"))
            elif needed not in services:
                allowed = ", ".join(sorted(s for s in services if s != service_id))
                issues.append(ConfigIssue(path, f"unknown service {needed!r} (allowed: {allowed})"))
            else:
                graph.setdefault(service_id, []).append(needed)
    for start in sorted(graph):  # a cycle is reported once, from its first service
        path_to = _cycle_from(start, graph)
        if path_to is not None and path_to[0] == min(path_to[:-1]):
            issues.append(
                ConfigIssue(
                    f"services.{start}.depends_on",
                    f"dependency cycle: {' -> '.join(path_to)}",
                )
            )
    return issues


def _cycle_from(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """The services of a dependency cycle through ``start``, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:  # bounded: each service is expanded once
        node, trail = stack.pop()
        for needed in graph.get(node, []):
            if needed == start:
                return [*trail, start]
            if needed not in seen:
                seen.add(needed)
                stack.append((needed, [*trail, needed]))
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def policy_reference_issues(raw: dict[str, Any]) -> list[ConfigIssue]:
    """Escalation policies and channels that are named but not defined."""
    issues: list[ConfigIssue] = []
    policies = _mapping(raw.get("escalation_policies"))
    channels = _mapping(raw.get("channels"))

    def policy(path: str, name: Any) -> None:
        if name is not None and name not in policies:
            allowed = ", ".join(sorted(policies)) or "none defined under escalation_policies"
            issues.append(
                ConfigIssue(path, f"unknown escalation policy {name!r} (allowed: {allowed})")
            )

    def channel(path: str, name: Any) -> None:
        if name not in channels:
            allowed = ", ".join(sorted(channels)) or "none defined under channels"
            issues.append(ConfigIssue(path, f"unknown channel {name!r} (allowed: {allowed})"))

    incidents = _mapping(raw.get("incidents"))
    policy("incidents.default_policy", incidents.get("default_policy"))
    policy(
        "incidents.correlation.escalation_policy",
        _mapping(incidents.get("correlation")).get("escalation_policy"),
    )
    for index, customer in _items(raw.get("customers")):
        policy(f"customers[{index}].escalation_policy", customer.get("escalation_policy"))
    for service_id, service in _mapping(raw.get("services")).items():
        policy(
            f"services.{service_id}.escalation_policy", _mapping(service).get("escalation_policy")
        )
    for name, spec in policies.items():
        for position, step in _items(_mapping(spec).get("steps")):
            notify = step.get("notify")
            for k, item in enumerate(notify if isinstance(notify, list) else []):
                path = f"escalation_policies.{name}.steps[{position}].notify[{k}]"
                if isinstance(item, dict):  # {channel: NAME, recipients: [...]}
                    if "channel" in item:
                        channel(f"{path}.channel", item["channel"])
                elif not isinstance(item, list):
                    channel(path, item)
    monthly = _mapping(_mapping(raw.get("reports")).get("monthly"))
    report_channels = monthly.get("channels")
    for k, channel_name in enumerate(report_channels if isinstance(report_channels, list) else []):
        channel(f"reports.monthly.channels[{k}]", channel_name)
    customer_monthly = _mapping(_mapping(raw.get("reports")).get("customer_monthly"))
    if customer_monthly.get("channel") is not None:
        report_channel = customer_monthly.get("channel")
        channel("reports.customer_monthly.channel", report_channel)
        named = channels.get(report_channel) if isinstance(report_channel, str) else None
        kind = _mapping(named).get("type")
        if kind is not None and kind not in ("email", "file"):
            issues.append(
                ConfigIssue(
                    "reports.customer_monthly.channel",
                    f"channel {report_channel!r} is a {kind} channel: the customers' reports go by "
                    "e-mail (type email; file for a dry run)",
                )
            )
    elif customer_monthly.get("enabled") is True:
        issues.append(
            ConfigIssue(
                "reports.customer_monthly.channel",
                "give the e-mail channel that sends the customers' monthly reports",
            )
        )
    issues += _customer_updates_channel_issues(raw, channels, channel)
    ops_channels = _mapping(raw.get("monitor")).get("ops_channels")
    for k, channel_name in enumerate(ops_channels if isinstance(ops_channels, list) else []):
        channel(f"monitor.ops_channels[{k}]", channel_name)
    limits = _mapping(_mapping(raw.get("notifications")).get("rate_limit_per_minute"))
    for channel_name in limits:
        channel(f"notifications.rate_limit_per_minute.{channel_name}", channel_name)
    return issues


def _customer_updates_channel_issues(
    raw: dict[str, Any], channels: dict[str, Any], channel: Callable[[str, Any], None]
) -> list[ConfigIssue]:
    """The channel of customer updates: an e-mail channel (file for a dry run), and
    required as soon as a contact has ``notify: true``."""
    path = "notifications.customer_updates_channel"
    name = _mapping(raw.get("notifications")).get("customer_updates_channel")
    if name is not None:
        channel(path, name)
        kind = _mapping(channels.get(name) if isinstance(name, str) else None).get("type")
        if kind is not None and kind not in ("email", "file"):
            return [
                ConfigIssue(
                    path,
                    f"channel {name!r} is a {kind} channel: customer updates go by e-mail "
                    "(type email; file for a dry run)",
                )
            ]
        return []
    for index, customer in _items(raw.get("customers")):
        for position, contact in _items(customer.get("contacts")):
            if contact.get("notify") is True:
                return [
                    ConfigIssue(
                        path,
                        f"customers[{index}].contacts[{position}] has notify: true: give the "
                        "e-mail channel that sends customer updates",
                    )
                ]
    return []


def _representative(raw: dict[str, Any]) -> dict[str, Any]:
    """The document with each service's check options filled in for its first subscriber.

    Types of options (a port, a URL) can only be checked once placeholders are
    filled; doing it for one customer here reports a mistake once, at the check's
    own path. Every other customer's values are checked by the catalog.
    """
    services = _mapping(raw.get("services"))
    chosen: dict[str, dict[str, dict[str, str]]] = {}
    for _, customer in _items(raw.get("customers")):
        entries = customer.get("subscriptions")
        for entry in entries if isinstance(entries, list) else []:
            subscription = subscription_shorthand(entry)
            if not isinstance(subscription, dict):
                continue
            service_id = subscription.get("service")
            if not isinstance(service_id, str) or service_id in chosen:
                continue
            chosen[service_id] = values_for(
                str(customer.get("id", "")),
                str(customer.get("name", "")),
                str(customer.get("tenant_domain", "")),
                str(customer.get("tier", "")),
                {str(k): str(v) for k, v in _mapping(customer.get("vars")).items()},
                service_id,
                {str(k): str(v) for k, v in _mapping(subscription.get("vars")).items()},
            )
    filled = dict(raw)
    filled_services = {}
    for service_id, service in services.items():
        values = chosen.get(service_id)
        if values is None or not isinstance(service, dict):
            filled_services[service_id] = service
            continue
        checks = service.get("checks")
        filled_services[service_id] = {
            **service,
            "checks": [
                {
                    key: value if key in CHECK_BASE_FIELDS else fill(value, values, set())
                    for key, value in check.items()
                }
                if isinstance(check, dict)
                else check
                for check in (checks if isinstance(checks, list) else [])
            ],
        }
    filled["services"] = filled_services
    return filled


def parse_config(
    raw: Any,
    source: str = "config",
    env: Mapping[str, str] | None = None,
    revealed: set[str] | None = None,
) -> ConfigBase:
    """Validate a parsed YAML document; raise ConfigError with every problem.

    What references were replaced by is added to ``revealed`` (for later messages
    about the same config to hide) and never appears in the ConfigError."""
    revealed = set() if revealed is None else revealed
    try:
        return _parse_config(raw, source, os.environ if env is None else env, revealed)
    except ConfigError as exc:
        raise exc.redacted(revealed) from None


def _parse_config(raw: Any, source: str, env: Mapping[str, str], revealed: set[str]) -> ConfigBase:
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigIssue("", "the file must hold a mapping with services and customers")], source
        )
    issues: list[ConfigIssue] = []
    resolved = resolve_secrets(raw, env, issues, (), revealed)
    issues += cross_reference_issues(resolved) + policy_reference_issues(resolved)
    issues += schedule_reference_issues(resolved)
    # Check options are validated with each type's model for a representative customer;
    # the rest of the file with the model that keeps options as written.
    strict = config_model()
    try:
        strict.model_validate(_representative(resolved))
    except ValidationError as exc:
        issues += [i for i in issues_from_validation(exc, strict) if ".checks[" in i.path]
    template = template_model()
    try:
        config = template.model_validate(resolved, context=shared_specs())
        pool: dict[Any, Any] = {}
        for customer in config.customers:
            share_repeated_parts(customer, pool)
    except ValidationError as exc:
        issues += [i for i in issues_from_validation(exc, template) if ".checks[" not in i.path]
        raise ConfigError(issues, source) from None
    if issues:
        raise ConfigError(issues, source)
    return config
