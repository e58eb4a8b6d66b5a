"""``azure_resource_health``: what Azure operated by 21Vianet says about a customer's resources.

Reads Azure Resource Health on ``management.chinacloudapi.cn`` with the app's
client credentials (the app needs Reader on the subscription):

- ``availabilityStatuses``: of the configured ``resources`` (one ``…/current``
  call each) or, when none are configured, of the whole subscription (one
  paged list); ``Available``/``Degraded``/``Unavailable``/``Unknown`` become
  up/degraded/down/unknown;
- the subscription's service-health ``events`` that are active: a
  ServiceIssue makes its service at least degraded, PlannedMaintenance and
  HealthAdvisory are attached without changing the status.

``services`` maps onto our catalog: a key starting with ``/`` is a resource id
prefix (``/subscriptions/…/resourceGroups/shop``), a key with a ``/`` a resource
type (``Microsoft.Web/sites``), any other key the service name Azure uses in
its events (``App Service``). One check per subscription covers every mapped
service. Which api-versions Azure China serves is not documented: the
configured one is tried first, then ``fallback_api_versions``; the one that
works is remembered. Result, caching and budget as in ``vendor_common`` and
``vendor_api``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from checks.vendor_api import (
    ApiVersions,
    Credentials,
    RequestRefused,
    VendorApi,
    read_shared,
)
from checks.vendor_common import (
    SEVERITY,
    VENDOR_METRIC_HELP,
    CatalogService,
    State,
    VendorOptions,
    VendorStatus,
    arm_state,
    dicts,
    plain_text,
    text,
    timestamp,
    vendor_failure,
    vendor_result,
)
from monitor.probe import ProbeContext, ProbeResult, Target

# A vendor API outage is unknown for the vendor signal, never down for the service.
FAILURE_IS_UNKNOWN = True

METRIC_HELP = VENDOR_METRIC_HELP

API_VERSION = r"^\d{4}-\d{2}-\d{2}(-preview)?$"
NOT_FOUND = {"resourcenotfound", "resourcegroupnotfound", "parentresourcenotfound"}
PROVIDER = "/providers/Microsoft.ResourceHealth"
_EVENT_RANK = {"serviceissue": 3, "plannedmaintenance": 2}  # any other type is an advisory


class Options(VendorOptions):
    subscription_id: str = Field(pattern=r"^[^/?#\s]+$", description="Azure subscription ID")
    arm_base: str = Field(
        "https://management.chinacloudapi.cn",
        pattern=r"^https?://[^/?#]+/?$",
        description="Azure Resource Manager endpoint (also the token's resource)",
    )
    api_version: str = Field("2022-10-01", pattern=API_VERSION, description="Tried first")
    fallback_api_versions: list[Annotated[str, Field(pattern=API_VERSION)]] = Field(
        ["2020-05-01", "2018-07-01"], description="Tried in order when ARM refuses the api-version"
    )
    resources: list[Annotated[str, Field(pattern=r"^/subscriptions/[^/?#]+/[^?#]+$")]] = Field(
        [], description="Resource ids to read (/subscriptions/…); empty: the whole subscription"
    )
    services: dict[str, CatalogService] = Field(
        min_length=1,
        description="Resource id prefix, resource type (Microsoft.Web/sites) or event service "
        "name (App Service), any case → our catalog service id",
    )
    include_events: bool = Field(True, description="Also read the active service-health events")

    @property
    def api_versions(self) -> list[str]:
        return list(dict.fromkeys([self.api_version, *self.fallback_api_versions]))


@dataclass(frozen=True)
class ResourceHealth:
    """One read of a subscription's resource health and events."""

    resources: list[tuple[str, dict[str, Any]]]  # (resource id, availabilityStatus properties)
    missing: tuple[str, ...]  # configured resources ARM does not know
    events: list[dict[str, Any]]  # properties of the active events, plus their "name"
    truncated: tuple[str, ...]
    pages: int


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    base = opts.arm_base.rstrip("/")
    credentials = Credentials(
        opts.authority, opts.tenant, opts.client_id, opts.client_secret, f"{base}/.default"
    )
    api = VendorApi(ctx, credentials, "assign the app Reader on the subscription")
    key = (
        *("azure", base, opts.subscription_id.lower(), opts.tenant.lower(), opts.client_id),
        *(tuple(opts.resources), opts.include_events, opts.max_pages),
    )
    reading = await read_shared(
        ctx, key, lambda: _read(api, base, opts, ctx), opts.reuse_within, opts.max_stale
    )
    if reading.document is None:
        return vendor_failure(opts.services.values(), "azure", reading.reason, started, ctx)
    health = reading.document
    statuses, issues_active, notes = _statuses(health, opts)
    notes += [f"ARM resource not found: {rid.rsplit('/', 1)[-1]}" for rid in health.missing]
    notes += [f"ARM {name}: more than {opts.max_pages} pages" for name in health.truncated]
    if reading.note:
        notes.append(reading.note)
    return vendor_result(
        statuses,
        started=started,
        ctx=ctx,
        issues_active=issues_active,
        pages=health.pages,
        fetched_at=reading.at,
        notes=notes,
    )


async def _read(api: VendorApi, base: str, opts: Options, ctx: ProbeContext) -> ResourceHealth:
    subscription = f"{base}/subscriptions/{opts.subscription_id}{PROVIDER}"
    resources: list[tuple[str, dict[str, Any]]] = []
    missing: list[str] = []
    truncated: list[str] = []
    statuses = ApiVersions(ctx, (base, "availabilityStatuses"), opts.api_versions)
    for rid in opts.resources:
        url = f"{base}{rid}{PROVIDER}/availabilityStatuses/current"
        where = f"ARM availabilityStatuses {rid.rsplit('/', 1)[-1]}"
        try:
            document = await statuses.call(functools.partial(_get, api, url, where), where)
        except RequestRefused as exc:
            if exc.status != 404 and exc.code.lower() not in NOT_FOUND:
                raise
            missing.append(rid)
            continue
        resources.append((rid, _properties(document)))
    if not opts.resources:
        where = "ARM availabilityStatuses"
        listed, cut = await statuses.call(
            functools.partial(_list, api, f"{subscription}/availabilityStatuses", where, opts),
            where,
        )
        resources = [(_resource_id(str(item.get("id", ""))), _properties(item)) for item in listed]
        if cut:
            truncated.append("availabilityStatuses")
    events: list[dict[str, Any]] = []
    if opts.include_events:
        versions = ApiVersions(ctx, (base, "events"), opts.api_versions)
        listed, cut = await versions.call(
            functools.partial(_list, api, f"{subscription}/events", "ARM events", opts),
            "ARM events",
        )
        for item in listed:
            properties = _properties(item)
            kind = str(properties.get("eventType", "")).lower()
            if str(properties.get("status", "")).lower() == "active" and kind != "rca":
                events.append({**properties, "name": item.get("name")})
        if cut:
            truncated.append("events")
    return ResourceHealth(resources, tuple(missing), events, tuple(truncated), api.pages)


async def _get(api: VendorApi, url: str, where: str, version: str) -> dict[str, Any]:
    return await api.get(f"{url}?api-version={version}", where)


async def _list(
    api: VendorApi, url: str, where: str, opts: Options, version: str
) -> tuple[list[dict[str, Any]], bool]:
    return await api.collect(f"{url}?api-version={version}", where, "nextLink", opts.max_pages)


def _properties(item: dict[str, Any]) -> dict[str, Any]:
    properties = item.get("properties")
    return properties if isinstance(properties, dict) else {}


def _resource_id(status_id: str) -> str:
    """The resource an availabilityStatus id belongs to."""
    cut = status_id.lower().find(PROVIDER.lower() + "/")
    return status_id[:cut] if cut > 0 else status_id


def _resource_type(rid: str) -> str:
    """Microsoft.Sql/servers/databases for …/providers/Microsoft.Sql/servers/s1/databases/d1."""
    parts = [part for part in rid.split("/") if part]
    lowered = [part.lower() for part in parts]
    if "providers" not in lowered:
        return ""
    rest = parts[len(lowered) - lowered[::-1].index("providers") :]
    return "/".join([rest[0], *rest[1::2]]) if len(rest) >= 2 else ""


def _owner(rid: str, mapping: dict[str, str]) -> str | None:
    """The catalog service a resource maps to: the longest id prefix, else its type."""
    rid_lower, kind = rid.lower(), _resource_type(rid).lower()
    best: tuple[int, str] | None = None
    for key, service in mapping.items():
        key_lower = key.lower().rstrip("/")
        if key.startswith("/") and (rid_lower + "/").startswith(key_lower + "/"):
            score = len(key_lower) + 1
        elif not key.startswith("/") and "/" in key and key_lower == kind:
            score = 0
        else:
            continue
        if best is None or score > best[0]:
            best = (score, service)
    return best[1] if best else None


def _impacted(event: dict[str, Any]) -> set[str]:
    return {str(i.get("impactedService", "")).lower() for i in dicts(event.get("impact"))}


def _event_rank(event: dict[str, Any]) -> tuple[int, float]:
    kind = str(event.get("eventType", "")).lower()
    return _EVENT_RANK.get(kind, 1), timestamp(event.get("lastUpdateTime")) or 0.0


def _statuses(health: ResourceHealth, opts: Options) -> tuple[list[VendorStatus], int, list[str]]:
    owners = {rid: _owner(rid, opts.services) for rid, _ in health.resources}
    owners.update({rid: _owner(rid, opts.services) for rid in health.missing})
    statuses: list[VendorStatus] = []
    event_ids: set[str] = set()
    notes: list[str] = []
    for service in dict.fromkeys(opts.services.values()):
        keys = [k for k, s in opts.services.items() if s == service]
        names = {k.lower() for k in keys if "/" not in k}
        states: list[tuple[State, str, dict[str, Any]]] = [
            (arm_state(p.get("availabilityState")), str(p.get("availabilityState", "")), p)
            for rid, p in health.resources
            if owners[rid] == service
        ]
        states += [
            ("unknown", "ResourceNotFound", {}) for r in health.missing if owners[r] == service
        ]
        events = [e for e in health.events if names & _impacted(e)]
        event_ids.update(str(e.get("name")) for e in events)
        status: State
        if states:
            status, word, worst_props = max(states, key=lambda s: SEVERITY[s[0]])
        elif names and opts.include_events:
            status, word, worst_props = "up", "", {}
        else:
            status, word, worst_props = "unknown", "", {}
            notes.append(f"no resource maps to {service}")
        issue = max(events, key=_event_rank, default=None)
        fields: dict[str, Any] = {}
        if issue is not None:
            kind = str(issue.get("eventType", ""))
            if kind.lower() == "serviceissue" and SEVERITY[status] < SEVERITY["degraded"]:
                status, word = "degraded", kind
            fields = _event_fields(issue)
        elif status != "up" and worst_props:
            fields = {
                "title": plain_text(worst_props.get("summary") or worst_props.get("title")),
                "latest_post": plain_text(worst_props.get("detailedStatus")),
                "start": timestamp(worst_props.get("occuredTime")),
            }
        planned = [e for e in events if str(e.get("eventType", "")).lower() == "plannedmaintenance"]
        window_start, window_end = announced_window(planned)
        statuses.append(
            VendorStatus(
                service,
                "azure",
                status,
                word,
                planned_maintenance=bool(planned),
                maintenance_start=window_start,
                maintenance_end=window_end,
                **fields,
            )
        )
    return statuses, len(event_ids), notes


def announced_window(events: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Start and end of the soonest planned maintenance among ``events``: the end is
    ``impactMitigationTime``, else the start plus ``duration`` (seconds), else unknown."""
    spans = []
    for event in events:
        start = timestamp(event.get("impactStartTime"))
        if start is None:
            continue
        end = timestamp(event.get("impactMitigationTime"))
        duration = event.get("duration")
        if end is None and isinstance(duration, int | float) and not isinstance(duration, bool):
            end = start + float(duration)
        spans.append((start, end if end is not None and end > start else None))
    return min(spans, key=lambda span: span[0]) if spans else (None, None)


def _event_fields(event: dict[str, Any]) -> dict[str, Any]:
    kind = str(event.get("eventType", "")).lower()
    updates = [
        update
        for impact in dicts(event.get("impact"))
        for region in dicts(impact.get("impactedRegions"))
        for update in dicts(region.get("updates"))
    ]
    latest = max(updates, key=lambda u: timestamp(u.get("updateDateTime")) or 0.0, default={})
    post = latest.get("summary") or event.get("summary") or event.get("description")
    return {
        "issue_id": text(event.get("name")),
        "title": plain_text(event.get("title")),
        "latest_post": plain_text(post),
        "classification": {"serviceissue": "incident", "plannedmaintenance": "maintenance"}.get(
            kind, "advisory"
        ),
        "start": timestamp(event.get("impactStartTime")),
    }
