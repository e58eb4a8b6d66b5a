"""Configuration: the YAML file's models, loading and precise error reporting.

Validation happens in two passes, both collecting every problem:

1. the file against the pydantic models below (structure, types, unknown
   keys, check options per check type, cross-references);
2. every check instantiated for every subscribing customer (``catalog.py``),
   which catches what only appears once ``{customer.…}`` placeholders are
   filled in.

Every problem is reported as ``path: message`` with the path written the way
an operator reads the file (``customers[2].subscriptions[0].service``).
"""

from __future__ import annotations

import functools
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import ErrorDetails

from checks import CheckType, check_types
from monitor.channels import CHANNEL_TYPES, options_union
from monitor.config_types import SLUG, Duration, StrictModel
from monitor.incident_config import (
    EscalationPolicySpec,
    IncidentSettingsSpec,
    NotificationSettingsSpec,
)
from monitor.placeholders import fill, values_for
from monitor.report_config import ReportSettingsSpec, RetentionSpec

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, order=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str = "config") -> None:
        self.issues = sorted(set(issues))
        self.source = source
        super().__init__(self.summary())

    def redacted(self, revealed: Iterable[str]) -> ConfigError:
        """The same problems, with every value in ``revealed`` (what ``${ENV}`` and
        ``file:`` references were replaced by) shown as ``***`` wherever a message quotes it."""
        return ConfigError(
            [ConfigIssue(i.path, redact(i.message, revealed)) for i in self.issues], self.source
        )

    def summary(self) -> str:
        count = len(self.issues)
        lines = [f"{self.source}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


def redact(text: str, revealed: Iterable[str]) -> str:
    """``text`` with each of the ``revealed`` values replaced by ``***``.

    Longest first, so that a value containing another is hidden whole; also in the
    escaped form ``repr()`` gives it. A value of one to three characters is hidden
    only where it stands alone, so that ``customers[1]`` survives a secret ``1``.
    """
    for value in sorted({v for v in revealed if v}, key=len, reverse=True):
        for form in dict.fromkeys((value, repr(value)[1:-1])):
            if len(form) >= 4:
                text = text.replace(form, "***")
            else:
                text = re.sub(rf"(?<![\w.-]){re.escape(form)}(?![\w.-])", "***", text)
    return text


class TimingOverrides(StrictModel):
    """Scheduling and threshold settings; each level may override any of them."""

    interval: Duration | None = Field(None, description="Time between probes, e.g. 60s")
    retry_interval: Duration | None = Field(
        None, description="Time between probes while a failure is not yet confirmed"
    )
    timeout: Duration | None = Field(None, description="A probe taking longer fails")
    failure_threshold: int | None = Field(
        None, ge=1, le=100, description="Failed probes in a row before down"
    )
    success_threshold: int | None = Field(
        None, ge=1, le=100, description="Good probes in a row before up again"
    )
    degraded_latency: Duration | None = Field(
        None, description="A successful probe slower than this makes the target degraded"
    )


class Timing(StrictModel):
    """Fully resolved timing of one target."""

    interval: float
    retry_interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    degraded_latency: float | None

    def override(self, *layers: TimingOverrides | None) -> Timing:
        values = self.model_dump()
        for layer in layers:
            if layer is not None:
                values.update(layer.model_dump(include=_TIMING_FIELDS, exclude_none=True))
        return Timing(**values)


_TIMING_FIELDS = set(TimingOverrides.model_fields)


class Defaults(TimingOverrides):
    interval: Duration = 60.0
    retry_interval: Duration = 10.0
    timeout: Duration = 10.0
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    degraded_latency: Duration | None = None

    def timing(self) -> Timing:
        return Timing(**self.model_dump())


class ApiToken(StrictModel):
    name: str
    token: SecretStr = Field(description="Bearer token; use ${ENV_VAR} or file:/path")
    roles: list[Literal["read", "operate", "admin"]] = ["read"]


class MonitorSettings(StrictModel):
    listen: str = Field("127.0.0.1:9700", description="host:port of the HTTP server")
    data_dir: str = Field("./data", description="Where the embedded store keeps its files")
    store: str | None = Field(
        None,
        description="Database URL: sqlite:///path or postgresql://user@host/db "
        "(default: SQLite in data_dir)",
    )
    public_url: str | None = Field(None, description="External base URL (acknowledge links)")
    max_concurrency: int = Field(512, ge=1, le=100_000, description="Probes running at once")
    shutdown_grace: Duration = Field(10.0, description="How long in-flight probes may finish")
    log_format: Literal["keyvalue", "json"] = "keyvalue"
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="Event loop of the daemon (uvloop measured no faster here)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    protect_reads: bool = Field(False, description="Reads of the API also need a token")
    audit_key: SecretStr | None = Field(
        None,
        description="Key of the audit log's hash chain (default: data_dir/audit.key); "
        "replicas sharing a database need the same one",
    )
    api_tokens: list[ApiToken] = Field(
        default_factory=list, description="Tokens for the HTTP API; reload needs role admin"
    )

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {value!r}")
        return value


class Tier(StrictModel):
    sla_target: float | None = Field(None, gt=0, le=100, description="Availability target, %")
    ack_within: Duration | None = Field(
        None, description="Response policy: incidents must be acknowledged within this"
    )
    resolve_within: Duration | None = Field(
        None, description="Response policy: incidents must be resolved within this"
    )
    description: str | None = None


class Contact(StrictModel):
    name: str
    role: str | None = None
    email: str | None = None
    phone: str | None = None


def _subscription_shorthand(value: Any) -> Any:
    return {"service": value} if isinstance(value, str) else value


class SubscriptionSpec(TimingOverrides):
    service: str
    sla_target: float | None = Field(
        None,
        gt=0,
        le=100,
        description="This customer's target for this service, % "
        "(default: the tier's, else the service's)",
    )
    vars: dict[str, str] = Field(
        default_factory=dict, description="Values for {customer.NAME} in this service's checks"
    )
    checks: dict[str, TimingOverrides] = Field(
        default_factory=dict, description="Per-check overrides, by check name"
    )
    enabled: bool = True


class CustomerSpec(TimingOverrides):
    id: str = Field(pattern=SLUG, description="Stable identifier, used in metrics labels")
    name: str
    tenant_domain: str = Field(description="e.g. contoso.partner.onmschina.cn")
    tier: str = "standard"
    escalation_policy: str | None = Field(None, description="Overrides the service's policy")
    contacts: list[Contact] = Field(default_factory=list)
    vars: dict[str, str] = Field(
        default_factory=dict, description="Values for {customer.NAME} placeholders"
    )
    subscriptions: list[Annotated[SubscriptionSpec, BeforeValidator(_subscription_shorthand)]]


class ServiceSpec(TimingOverrides):
    name: str = Field(description="Display name, e.g. Exchange Online (operated by 21Vianet)")
    vendor: str = "21Vianet"
    sla_target: float | None = Field(None, gt=0, le=100)
    escalation_policy: str | None = Field(None, description="Policy for this service's incidents")
    sla_counts_degraded: bool = Field(
        False,
        description="Degraded time counts as downtime in SLA figures (most vendor SLAs "
        "count only 'unavailable')",
    )
    aggregate: Literal["worst", "partial"] = Field(
        "worst",
        description="worst: the worst check decides; partial: down only if every "
        "check is down, degraded if some are",
    )
    depends_on: list[Annotated[str, Field(pattern=SLUG)]] = Field(
        default_factory=list,
        description="Services this one needs (e.g. entra-signin): while one of them is down "
        "or degraded for the customer, this service's incident is held back instead of "
        "paging, and pages if it outlasts them",
    )
    checks: list[Any] = Field(min_length=1)  # replaced per check type in config_model()


class ConfigBase(StrictModel):
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    defaults: Defaults = Field(default_factory=Defaults)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    incidents: IncidentSettingsSpec = Field(default_factory=IncidentSettingsSpec)
    escalation_policies: dict[str, EscalationPolicySpec] = Field(default_factory=dict)
    notifications: NotificationSettingsSpec = Field(default_factory=NotificationSettingsSpec)
    reports: ReportSettingsSpec = Field(default_factory=ReportSettingsSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    channels: dict[str, Any] = Field(
        default_factory=dict, description="Where notifications go, by name"
    )
    services: dict[Annotated[str, Field(pattern=SLUG)], ServiceSpec]
    customers: list[CustomerSpec]


class CheckBase(TimingOverrides):
    """Fields every check has besides its type's options."""

    name: str = Field(pattern=SLUG, description="Unique within its service")


_CHECK_BASE_FIELDS = set(CheckBase.model_fields) | {"type"}


class TemplateCheck(CheckBase):
    """A check as written in the catalog: its type's options still hold ``{customer.…}``
    placeholders, so they are kept as written and validated per customer (catalog.py)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class TemplateService(ServiceSpec):
    checks: list[TemplateCheck] = Field(min_length=1)


@functools.cache
def template_model() -> type[ConfigBase]:
    """The root model that keeps check options as written (the catalog fills them in)."""
    service_id: Any = Annotated[str, Field(pattern=SLUG)]
    channel_options: Any = options_union()
    model: type[ConfigBase] = create_model(
        "TemplateConfig",
        __base__=ConfigBase,
        services=(dict[service_id, TemplateService], ...),
        channels=(dict[str, channel_options], Field(default_factory=dict)),
    )
    return model


@functools.cache
def config_model(types: tuple[CheckType, ...] | None = None) -> type[ConfigBase]:
    """The root model, with one check model per registered check type.

    Built from the registry so that adding a check type needs no change here;
    the discriminated union gives errors that name the allowed types.
    """
    types = types or tuple(check_types().values())
    variants: list[Any] = []
    for check_type in types:
        tag: Any = Literal[check_type.name]
        variants.append(
            create_model(
                f"{check_type.name.capitalize()}Check",
                __base__=(CheckBase, check_type.options),
                type=(tag, Field(description="Check type")),
            )
        )
    check_union: Any = Annotated[Union[tuple(variants)], Field(discriminator="type")]  # noqa: UP007
    service_id: Any = Annotated[str, Field(pattern=SLUG)]
    channel_options: Any = options_union()
    service: Any = create_model(
        "Service", __base__=ServiceSpec, checks=(list[check_union], Field(min_length=1))
    )
    model: type[ConfigBase] = create_model(
        "Config",
        __base__=ConfigBase,
        services=(dict[service_id, service], ...),
        channels=(dict[str, channel_options], Field(default_factory=dict)),
    )
    return model


def check_options(check: BaseModel) -> dict[str, Any]:
    """The plugin options of a check (everything but name, type and timing), as written."""
    return {
        key: value
        for key, value in (check.model_extra or {}).items()
        if key not in _CHECK_BASE_FIELDS
    }


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
            subscription = _subscription_shorthand(entry)
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
                    key: value if key in _CHECK_BASE_FIELDS else fill(value, values, set())
                    for key, value in check.items()
                }
                if isinstance(check, dict)
                else check
                for check in (checks if isinstance(checks, list) else [])
            ],
        }
    filled["services"] = filled_services
    return filled


def json_schema() -> dict[str, Any]:
    schema = config_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "csp-monitor configuration"
    return schema


# ------------------------------------------------------------------ error formatting


def format_path(loc: Iterable[int | str]) -> str:
    """``('customers', 2, 'subscriptions', 0)`` → ``customers[2].subscriptions[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


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
            subscription = _subscription_shorthand(entry)
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
            for k, channel_name in enumerate(notify if isinstance(notify, list) else []):
                channel(f"escalation_policies.{name}.steps[{position}].notify[{k}]", channel_name)
    monthly = _mapping(_mapping(raw.get("reports")).get("monthly"))
    report_channels = monthly.get("channels")
    for k, channel_name in enumerate(report_channels if isinstance(report_channels, list) else []):
        channel(f"reports.monthly.channels[{k}]", channel_name)
    limits = _mapping(_mapping(raw.get("notifications")).get("rate_limit_per_minute"))
    for channel_name in limits:
        channel(f"notifications.rate_limit_per_minute.{channel_name}", channel_name)
    return issues


# ---------------------------------------------------------------- loading and secrets

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_secrets(
    value: Any,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
    loc: tuple[int | str, ...] = (),
    revealed: set[str] | None = None,
) -> Any:
    """Replace ``${VAR}``, ``${VAR:-default}`` and whole-value ``file:/path`` references.

    References are allowed in any field (a customer's ``vars`` carry secrets into check
    options); what they were replaced by is added to ``revealed``, and no message ever
    quotes it (:meth:`ConfigError.redacted`). Secret fields hold it as a ``SecretStr``.
    """
    revealed = set() if revealed is None else revealed
    if isinstance(value, dict):
        return {k: resolve_secrets(v, env, issues, (*loc, k), revealed) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, env, issues, (*loc, i), revealed) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if value.startswith("file:"):
        path = Path(value.removeprefix("file:"))
        try:
            content = path.read_text(encoding="utf-8").strip()
            revealed.add(content)
            return content
        except UnicodeDecodeError:
            issues.append(
                ConfigIssue(format_path(loc), f"secret file {str(path)!r} is not UTF-8 text")
            )
            return ""
        except OSError as exc:
            issues.append(
                ConfigIssue(
                    format_path(loc),
                    f"cannot read secret file {str(path)!r}: {exc.strerror or exc}",
                )
            )
            return ""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            revealed.add(env[name])
            return env[name]
        if default is not None:
            return default
        issues.append(ConfigIssue(format_path(loc), f"environment variable {name} is not set"))
        return ""

    return _ENV_REF.sub(substitute, value) if "$" in value else value


DEFAULT_MAX_CONFIG_BYTES = 10 * 1024 * 1024
MAX_CONFIG_BYTES_ENV = "CSP_MONITOR_MAX_CONFIG_BYTES"
MAX_ALIAS_NODES = 100_000
"""Nodes that aliases (``*name``) may add to a document when expanded. A config that
shares a list of subscriptions between thousands of customers stays far below it; a
"billion laughs" file of nested aliases (1 KB, 10**9 nodes) is refused while it is
composed, before anything is expanded."""
MAX_NESTING = 100
"""Levels of nested mappings and lists: a config needs about ten."""


def max_config_bytes(configured: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """The size limit of a config file: ``configured`` (``--max-config-bytes``), else
    ``$CSP_MONITOR_MAX_CONFIG_BYTES``, else 10 MiB. It is read before the file is, so it
    cannot live in the file."""
    if configured is not None:
        return configured
    value = (os.environ if env is None else env).get(MAX_CONFIG_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_CONFIG_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            [ConfigIssue("", f"{MAX_CONFIG_BYTES_ENV} must be a positive number of bytes")],
            MAX_CONFIG_BYTES_ENV,
        )
    return int(value)


def read_config_bytes(path: Path, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and text; ConfigError when it cannot be read, is larger than
    ``max_bytes`` (checked before anything is parsed) or is not UTF-8."""
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue("", f"cannot read {source}: {exc.strerror or exc}")], source
        ) from None
    if len(data) > max_bytes:
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    f"the file is larger than the limit of {max_bytes} bytes "
                    f"(raise it with --max-config-bytes or {MAX_CONFIG_BYTES_ENV})",
                )
            ],
            source,
        )
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigIssue("", f"the file is not valid UTF-8 (line {line}, byte {exc.start})")],
            source,
        ) from None


class _RefusedYaml(yaml.MarkedYAMLError):
    """A document the loader will not build: an alias bomb, a recursive alias, deep nesting."""


class _ConfigLoader(yaml.SafeLoader):
    """A YAML loader for config files.

    It refuses duplicate keys instead of keeping the last, and counts while composing
    what aliases would expand to: nested aliases cost nothing to compose (an alias is a
    reference to its anchor's node) but every later pass (secrets, validation) copies
    them, so a small file could otherwise fill the memory.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
        self._alias_nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # its anchor's node is still being composed: it contains itself
                raise _RefusedYaml(
                    None, None, f"alias *{event.anchor} is inside its own anchor", mark
                )
            self._alias_nodes += size
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise _RefusedYaml(
                    None,
                    None,
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes, the limit "
                    "(write the repeated parts out, or nest fewer aliases)",
                    mark,
                )
            return node
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _RefusedYaml(
                    None,
                    None,
                    f"nested more than {MAX_NESTING} levels deep, the limit",
                    mark,
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        return node


def _construct_mapping(loader: _ConfigLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """The document in ``text``; ConfigError for a syntax error or a refused document."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            [ConfigIssue("", f"YAML error at {where}: {exc.problem}")], source
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"YAML error: {exc}")], source) from None
    except RecursionError:  # unreachable with MAX_NESTING, kept as a last line
        raise ConfigError([ConfigIssue("", "YAML error: nested too deep")], source) from None


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
    # Check options are validated with each type's model for a representative customer;
    # the rest of the file with the model that keeps options as written.
    strict = config_model()
    try:
        strict.model_validate(_representative(resolved))
    except ValidationError as exc:
        issues += [i for i in issues_from_validation(exc, strict) if ".checks[" in i.path]
    template = template_model()
    try:
        config = template.model_validate(resolved)
    except ValidationError as exc:
        issues += [i for i in issues_from_validation(exc, template) if ".checks[" not in i.path]
        raise ConfigError(issues, source) from None
    if issues:
        raise ConfigError(issues, source)
    return config
