"""The config file's models: one pydantic model per part of the file.

The root model is built from the check and channel registries (:func:`config_model`),
so adding a check or channel type needs no change here.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)

from checks import CheckType, check_types
from monitor.channels import options_union
from monitor.config_types import SLUG, Duration, StrictModel
from monitor.incident_config import (
    EscalationPolicySpec,
    IncidentSettingsSpec,
    NotificationSettingsSpec,
)
from monitor.report_config import ReportSettingsSpec, RetentionSpec
from monitor.schedule_config import PersonSpec, ScheduleSpec
from monitor.sight_config import BlindnessSettings, CanarySpec


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
        return Timing(**self.override_values(*layers))

    def override_values(self, *layers: TimingOverrides | None) -> dict[str, Any]:
        """The fields of ``override(*layers)``, in field order: a caller that keeps one
        Timing per distinct timing builds (and validates) it only for a new one."""
        values = self.model_dump()
        for layer in layers:
            if layer is not None:
                # the fields are plain floats and ints: read them, not model_dump() each
                # layer (five per target, a second of start-up at 50,000 targets)
                for name in _TIMING_FIELDS:
                    value = getattr(layer, name)
                    if value is not None:
                        values[name] = value
        return values


_TIMING_FIELDS = set(TimingOverrides.model_fields)


Location = Annotated[str, Field(pattern=SLUG, max_length=100)]


class Placement(StrictModel):
    """Where a target is probed from, and how many of those places must agree that it is down.

    Set on defaults, a service or a check; the nearest level that says ``locations`` wins
    (and ``quorum`` likewise). Without ``locations`` a target is probed from one place, as
    before locations existed."""

    locations: list[Location] | None = Field(
        None,
        min_length=1,
        description="Locations that probe the target (nodes' monitor.location), e.g. "
        "[sh-telecom, bj-unicom]",
    )
    quorum: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Locations that must say down for the target to be down (default: a "
        "majority of locations); fewer make it degraded",
    )

    @field_validator("locations")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"location {repeated[0]!r} is listed twice")
        return value

    @field_validator("quorum")
    @classmethod
    def _reachable(cls, value: int | None, info: ValidationInfo) -> int | None:
        locations = info.data.get("locations")
        if value is not None and locations and value > len(locations):
            raise ValueError(
                f"quorum {value} is more than the {len(locations)} locations listed: the "
                "target could never be down"
            )
        return value


def majority(count: int) -> int:
    """The default quorum of ``count`` locations: more than half of them."""
    return count // 2 + 1


class Defaults(TimingOverrides, Placement):
    interval: Duration = 60.0
    retry_interval: Duration = 10.0
    timeout: Duration = 10.0
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    degraded_latency: Duration | None = None

    def timing(self) -> Timing:
        return Timing(**self.model_dump(include=_TIMING_FIELDS))


class ApiToken(StrictModel):
    name: str
    token: SecretStr = Field(description="Bearer token; use ${ENV_VAR} or file:/path")
    roles: list[Literal["read", "operate", "admin", "agent"]] = ["read"]
    locations: list[Location] | None = Field(
        None,
        description="For role agent: the locations this token may probe for (it sees "
        "their checks' options, secrets included); default: every location",
    )


def _host_name() -> str:
    return socket.gethostname() or "node"


class ClusterSettings(StrictModel):
    """Several daemons sharing one PostgreSQL store: each probes its share of the targets."""

    enabled: bool = Field(True, description="Take part in a cluster (false: run alone)")
    node_id: str = Field(
        default_factory=_host_name,
        min_length=1,
        max_length=200,
        description="This node's name among the members (default: the host name); unique",
    )
    heartbeat_interval: Duration = Field(
        5.0, description="How often the node says it is alive and renews leadership"
    )
    dead_after: Duration = Field(
        20.0, description="A node silent for this long is dead: its targets move to the others"
    )
    advertise: str | None = Field(
        None,
        description="Where the other nodes reach this node's API (host:port or URL; default: "
        "the listen address): requests for the leader are passed there",
    )
    leader_lease: Duration | None = Field(
        None,
        description="How long leadership lasts without renewal (default: dead_after); the "
        "leader steps down at two thirds of it when it cannot renew",
    )

    @model_validator(mode="after")
    def _outlast_heartbeats(self) -> ClusterSettings:
        # a live node misses no deadline for one slow heartbeat: a leader must renew within
        # two thirds of its lease, so the lease spans at least three heartbeats
        for name in ("dead_after", "leader_lease"):
            value = getattr(self, name)
            if value is not None and value < 3 * self.heartbeat_interval:
                raise ValueError(
                    f"{name} ({value:g}s) must be at least three times "
                    f"heartbeat_interval ({self.heartbeat_interval:g}s)"
                )
        return self

    @property
    def lease_seconds(self) -> float:
        """How long a leader's lease lasts after each renewal."""
        return self.leader_lease if self.leader_lease is not None else self.dead_after


def _key_long_enough(value: SecretStr | None) -> SecretStr | None:
    # never the value in the message: it is a secret
    if value is not None and len(value.get_secret_value().encode()) < 16:
        raise ValueError("a signing key needs at least 16 bytes; use a long random one")
    return value


class ConsoleSettings(StrictModel):
    """The web console (sign-in with an API token): how long a sign-in lasts, how many
    wrong tokens an address may try before it must wait, and the keys that sign its
    session cookies and the customers' status links."""

    session_ttl: Duration = Field(
        43200.0, description="A console sign-in lasts this long (default 12h)"
    )
    sign_in_attempts: int = Field(
        5,
        ge=1,
        le=1000,
        description="Wrong tokens an address may try before each further try waits longer "
        "(doubling up to 15 min)",
    )
    session_key: SecretStr | None = Field(
        None,
        description="Key that signs console sessions (default: in a cluster, derived from "
        "monitor.link_key, so a sign-in works on every node; alone, "
        "data_dir/console-session.key)",
    )
    status_page_key: SecretStr | None = Field(
        None,
        description="Key that signs the customers' status page links (default: in a cluster, "
        "derived from monitor.link_key; alone, data_dir/status-page.key)",
    )

    _keys_long_enough = field_validator("session_key", "status_page_key")(
        lambda cls, value: _key_long_enough(value)
    )


class MonitorSettings(StrictModel):
    listen: str = Field("127.0.0.1:9700", description="host:port of the HTTP server")
    location: Location = Field(
        "default",
        description="Where this node probes from (e.g. sh-telecom): it probes the targets "
        "whose locations list it, and those without locations",
    )
    source_address: str | None = Field(
        None,
        description="Local IP address the HTTP and TCP probes connect from (e.g. to leave "
        "through one ISP's link); default: the system's choice",
    )
    data_dir: str = Field("./data", description="Where the embedded store keeps its files")
    store: str | None = Field(
        None,
        description="Database URL: sqlite:///path or postgresql://user@host/db "
        "(default: SQLite in data_dir)",
    )
    public_url: str | None = Field(
        None,
        description="External base URL of the console: links in messages point here "
        "(https makes the console's cookie Secure)",
    )
    max_concurrency: int = Field(512, ge=1, le=100_000, description="Probes running at once")
    shutdown_grace: Duration = Field(10.0, description="How long in-flight probes may finish")
    log_format: Literal["keyvalue", "json"] = "keyvalue"
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="Event loop of the daemon; uvloop costs about a fifth less CPU per probe "
        "(for nodes with tens of thousands of targets)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    protect_reads: bool = Field(False, description="Reads of the API also need a token")
    audit_key: SecretStr | None = Field(
        None,
        description="Key of the audit log's hash chain (default: data_dir/audit.key); "
        "replicas sharing a database need the same one",
    )
    link_key: SecretStr | None = Field(
        None,
        description="Key that signs acknowledge links (default: data_dir/link-signing.key); "
        "replicas sharing a database need the same one",
    )
    api_tokens: list[ApiToken] = Field(
        default_factory=list, description="Tokens for the HTTP API; reload needs role admin"
    )
    max_connections: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Connections the HTTP server keeps at once; the newest beyond are closed",
    )
    header_timeout: Duration = Field(
        10.0, description="A client that has not sent its request headers by then is cut off"
    )
    canaries: list[CanarySpec] = Field(
        default_factory=list,
        description="Checks of this node's own view of the world (see README, "
        "'When the monitor cannot see'): when most fail, the node is blind",
    )
    blindness: BlindnessSettings = Field(default_factory=BlindnessSettings)
    ops_channels: list[str] = Field(
        default_factory=list,
        description="Channels told when this node goes blind and when it sees again",
    )
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    cluster: ClusterSettings | None = Field(
        None,
        description="Replicas sharing a PostgreSQL store (monitor.store): membership, "
        "sharding of the targets, one leader",
    )

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @field_validator("source_address")
    @classmethod
    def _source_is_an_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"expected an IP address of this host, got {value!r}") from None
        return value

    @field_validator("link_key")
    @classmethod
    def _link_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # never the value in the message: it is a secret
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("a link-signing key needs at least 16 bytes; use a long random one")
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
    language: Literal["en", "zh-CN"] | None = Field(
        None,
        description="Language of messages to this contact's e-mail and phone (default: the "
        "channel's, else notifications.language)",
    )
    reports: bool = Field(
        False, description="Receives the customer's monthly service report (needs email)"
    )
    notify: bool = Field(
        False,
        description="Receives by e-mail the updates our team writes for the customer about "
        "an incident (notifications.customer_updates_channel; needs email)",
    )

    @model_validator(mode="after")
    def _reports_need_email(self) -> Contact:
        if self.reports and not self.email:
            raise ValueError("reports: true needs an email address to send the report to")
        if self.notify and not self.email:
            raise ValueError("notify: true needs an email address to send the updates to")
        return self


def subscription_shorthand(value: Any) -> Any:
    """``- exchange-online`` in a customer's subscriptions is ``{service: exchange-online}``."""
    return {"service": value} if isinstance(value, str) else value


# In a config with thousands of customers most subscriptions are alike (``- web``, or the
# same overrides): those written alike share one validated spec, which is frozen. A
# SubscriptionSpec is about 1 KB: 50 MB at 50,000 customers. The pool lives in the
# validation's context, so it goes with that validation: ``shared_specs()``.
SHARED_SPECS = "shared_specs"


def shared_specs() -> dict[str, Any]:
    """The validation context in which equal subscriptions share one spec."""
    return {SHARED_SPECS: {}}


def _written(value: Any) -> Any:
    """A hashable image of a YAML value, types included (``1`` is not ``true``)."""
    if isinstance(value, dict):
        return ("map", frozenset((_written(k), _written(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_written(item) for item in value))
    hash(value)  # TypeError for anything else unhashable
    return (type(value).__name__, value)


def _shared_subscription(
    value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> Any:
    pool = info.context.get(SHARED_SPECS) if isinstance(info.context, dict) else None
    if pool is None:
        return handler(value)
    try:
        key = _written(value)
    except TypeError:
        return handler(value)
    spec = pool.get(key)
    if spec is None:
        spec = pool[key] = handler(value)  # an invalid one raises: never pooled
    return spec


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


class StatusPageSpec(StrictModel):
    """The customer's own status page (``/status/{customer}``)."""

    public: bool = Field(
        False, description="Open to anyone; otherwise only through the signed link"
    )
    link_version: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Raise it to rotate the signed link (the old link stops working)",
    )


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
    subscriptions: list[
        Annotated[
            SubscriptionSpec,
            BeforeValidator(subscription_shorthand),
            WrapValidator(_shared_subscription),
        ]
    ]
    # a frozen default is shared, not copied: one object, not one per customer
    status_page: StatusPageSpec = StatusPageSpec()


class ServiceSpec(TimingOverrides, Placement):
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
    people: dict[Annotated[str, Field(pattern=SLUG)], PersonSpec] = Field(
        default_factory=dict, description="Who can be on call, by id (used by schedules)"
    )
    schedules: dict[Annotated[str, Field(pattern=SLUG)], ScheduleSpec] = Field(
        default_factory=dict,
        description="Who is on call when; an escalation step pages one with "
        "recipients: [schedule:NAME]",
    )
    services: dict[Annotated[str, Field(pattern=SLUG)], ServiceSpec]
    customers: list[CustomerSpec]


class CheckBase(TimingOverrides, Placement):
    """Fields every check has besides its type's options."""

    name: str = Field(pattern=SLUG, description="Unique within its service")


CHECK_BASE_FIELDS = set(CheckBase.model_fields) | {"type"}


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
        if key not in CHECK_BASE_FIELDS
    }


def json_schema() -> dict[str, Any]:
    schema = config_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "csp-monitor configuration"
    return schema
