"""``m365_health``: what Microsoft 365 operated by 21Vianet says about its own services.

Reads Microsoft Graph service communications for one customer tenant: a
client-credentials token from the tenant's token endpoint, then
``/admin/serviceAnnouncement/healthOverviews`` and the unresolved
``/admin/serviceAnnouncement/issues`` (both paged with ``@odata.nextLink``).
The app registration needs the application permission ServiceHealth.Read.All.

One check per customer covers every Graph service it maps: put it in a catalog
service of its own (e.g. ``m365-vendor-status``) that each customer with
Microsoft 365 subscribes to. Its result carries one ``VendorStatus`` per mapped
catalog service (``exchange-online``, ``sharepoint-online`` …). The probe
succeeds whenever Graph was read, whatever Graph says; see ``vendor_common``
for the result and ``vendor_api`` for the request budget (one sign-in and one
read per tenant per ``reuse_within``, shared by every check of that tenant).

An endpoint the 21Vianet cloud does not serve answers 400 "Resource not found
for the segment": its services are ``unsupported``, not down, and the probe
still succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field
from yarl import URL

from checks.vendor_api import Credentials, RequestRefused, VendorApi, read_shared
from checks.vendor_common import (
    SEVERITY,
    VENDOR_METRIC_HELP,
    CatalogService,
    State,
    VendorOptions,
    VendorStatus,
    dicts,
    graph_state,
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


class Options(VendorOptions):
    graph_base: str = Field(
        "https://microsoftgraph.chinacloudapi.cn/v1.0",
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="Microsoft Graph base URL with its version",
    )
    services: dict[str, CatalogService] = Field(
        min_length=1,
        description="Graph service id or name (Exchange, Exchange Online, SharePoint, "
        "microsoftteams …, any case) → our catalog service id",
    )
    include_issues: bool = Field(True, description="Also read the unresolved issues")


@dataclass(frozen=True)
class GraphHealth:
    """One read of a tenant's service health."""

    overviews: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    unsupported: tuple[str, ...]  # endpoints the cloud does not serve
    truncated: tuple[str, ...]  # endpoints cut at max_pages
    pages: int


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    base = opts.graph_base.rstrip("/")
    credentials = Credentials(
        opts.authority,
        opts.tenant,
        opts.client_id,
        opts.client_secret,
        scope=f"{URL(base).origin()}/.default",
    )
    api = VendorApi(ctx, credentials, "grant the app ServiceHealth.Read.All (application)")
    key = ("m365", base, opts.tenant.lower(), opts.client_id, opts.include_issues, opts.max_pages)
    reading = await read_shared(
        ctx, key, lambda: _read(api, base, opts), opts.reuse_within, opts.max_stale
    )
    if reading.document is None:
        return vendor_failure(opts.services.values(), "m365", reading.reason, started, ctx)
    health = reading.document
    statuses, issues_active, notes = _statuses(health, opts.services)
    notes += [f"Graph {name}: unsupported in this cloud" for name in health.unsupported]
    notes += [f"Graph {name}: more than {opts.max_pages} pages" for name in health.truncated]
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


async def _read(api: VendorApi, base: str, opts: Options) -> GraphHealth:
    endpoints = {"healthOverviews": f"{base}/admin/serviceAnnouncement/healthOverviews"}
    if opts.include_issues:
        # Encoded by hand: OData wants %20, yarl would write '+'.
        endpoints["issues"] = (
            f"{base}/admin/serviceAnnouncement/issues?$filter=isResolved%20eq%20false"
        )
    found: dict[str, list[dict[str, Any]]] = {}
    unsupported: list[str] = []
    truncated: list[str] = []
    for name, url in endpoints.items():
        try:
            found[name], cut = await api.collect(
                url, f"Graph {name}", "@odata.nextLink", opts.max_pages
            )
        except RequestRefused as exc:
            if "resource not found for the segment" not in exc.message.lower():
                raise
            unsupported.append(name)
            continue
        if cut:
            truncated.append(name)
    return GraphHealth(
        overviews=found.get("healthOverviews", []),
        # The filter is also applied here: a cloud that ignores $filter sends everything.
        issues=[i for i in found.get("issues", []) if i.get("isResolved") is not True],
        unsupported=tuple(unsupported),
        truncated=tuple(truncated),
        pages=api.pages,
    )


def _names(item: dict[str, Any], *fields: str) -> set[str]:
    return {value.lower() for f in fields if isinstance(value := item.get(f), str) and value}


def _issue_rank(issue: dict[str, Any]) -> tuple[bool, int, float]:
    """Incidents before advisories, then the worst status, then the latest change."""
    return (
        str(issue.get("classification", "")).lower() == "incident",
        SEVERITY[graph_state(issue.get("status"))],
        timestamp(issue.get("lastModifiedDateTime")) or 0.0,
    )


def _statuses(
    health: GraphHealth, mapping: dict[str, str]
) -> tuple[list[VendorStatus], int, list[str]]:
    """One VendorStatus per catalog service, the number of active issues, and notes."""
    keys: dict[str, set[str]] = {}
    for key, service in mapping.items():
        keys.setdefault(service, set()).add(key.lower())
    statuses: list[VendorStatus] = []
    issue_ids: set[str] = set()
    notes: list[str] = []
    for service, wanted in keys.items():
        overviews = [o for o in health.overviews if wanted & _names(o, "id", "service")]
        names = set(wanted).union(*(_names(o, "id", "service") for o in overviews))
        issues = [i for i in health.issues if _names(i, "service") & names]
        issue = max(issues, key=_issue_rank, default=None)
        issue_ids.update(str(i.get("id")) for i in issues)
        status: State
        if "healthOverviews" in health.unsupported:
            status, word = "unsupported", ""
        elif not overviews:
            status, word = "unknown", ""
            shown = " / ".join(k for k, s in mapping.items() if s == service)
            notes.append(f"Graph does not list {shown} for this tenant")
        else:
            chosen = max(overviews, key=lambda o: SEVERITY[graph_state(o.get("status"))])
            status, word = graph_state(chosen.get("status")), text(chosen.get("status")) or ""
        statuses.append(
            VendorStatus(
                service=service,
                source="m365",
                status=status,
                vendor_status=word,
                **_issue_fields(issue),
            )
        )
    return statuses, len(issue_ids), notes


def _issue_fields(issue: dict[str, Any] | None) -> dict[str, Any]:
    if issue is None:
        return {}
    posts = dicts(issue.get("posts"))
    latest = max(posts, key=lambda p: timestamp(p.get("createdDateTime")) or 0.0, default=None)
    description = latest.get("description") if latest else None
    classification = text(issue.get("classification"))
    post = description.get("content") if isinstance(description, dict) else None
    return {
        "issue_id": text(issue.get("id")),
        "title": text(issue.get("title")),
        "latest_post": plain_text(post or issue.get("impactDescription")),
        "classification": classification.lower() if classification else None,
        "start": timestamp(issue.get("startDateTime")),
    }
