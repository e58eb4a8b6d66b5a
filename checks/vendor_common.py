"""What a vendor says about its services: shared by ``m365_health`` and ``azure_resource_health``.

The vendor's own view (Microsoft Graph service communications for Microsoft 365,
Azure Resource Health for Azure, both operated by 21Vianet) is a signal of its
own, shown beside our probes. A probe of these types succeeds when the vendor
API was read, whatever the vendor says, and fails only when the API itself
could not be read. The vendor's view travels in ``ProbeResult.vendor``: one
:class:`VendorStatus` per catalog service the check maps; on a failure every
mapped service is ``unknown`` (a vendor API outage says nothing about the
customer's service). ``facts`` carry the few numbers worth a metric.

How the APIs are called (tokens, caching, request budget) is in ``vendor_api``.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr

from monitor.config_types import SLUG, Duration
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, failure

VENDOR_METRIC_HELP = {
    "vendor_services_impaired": "Mapped services the vendor reports degraded or down",
    "vendor_issues_active": (
        "Active vendor issues and events (incidents, advisories, planned maintenance) "
        "for the mapped services"
    ),
    "vendor_api_pages": "Pages the vendor API returned for the state shown",
    "vendor_state_age_seconds": (
        "Age in seconds of the vendor state shown (shared with another check, or kept "
        "while the vendor throttles us)"
    ),
}


class VendorOptions(CheckOptions):
    """Options both vendor checks share: the app registration, budget and alerting flags."""

    tenant: str = Field(
        pattern=r"^[^/?#\s]+$", description="Tenant ID or domain, usually {customer.tenant_domain}"
    )
    client_id: str = Field(min_length=1, description="Application (client) ID of the app")
    client_secret: SecretStr = Field(min_length=1, description="Client secret value of the app")
    authority: str = Field(
        "https://login.chinacloudapi.cn",
        pattern=r"^https?://[^/?#]+/?$",
        description="Sign-in host; the token URL is {authority}/{tenant}/oauth2/v2.0/token",
    )
    notify_advisories: bool = Field(
        False, description="Notify a vendor advisory while our own probes are fine"
    )
    maintenance_feeds_windows: bool = Field(
        False, description="Vendor planned maintenance opens our maintenance windows"
    )
    max_pages: int = Field(20, ge=1, le=200, description="Pages read per list at most")
    reuse_within: Duration = Field(
        55.0,
        description="Checks reading the same tenant or subscription share one read this long: "
        "keep it just below the check interval",
    )
    max_stale: Duration = Field(
        900.0, description="While throttled, show the last state read if not older than this"
    )


CatalogService = Annotated[str, Field(pattern=SLUG)]
"""A service id of our catalog (the value side of a check's ``services`` mapping)."""

State = Literal["up", "degraded", "down", "unknown", "unsupported"]
Source = Literal["m365", "azure"]

# Worst-of for several vendor services (or resources) mapped onto one catalog service.
SEVERITY: dict[State, int] = {"up": 0, "unsupported": 1, "unknown": 2, "degraded": 3, "down": 4}

# Graph serviceHealthStatus, lower-cased: the docs write camelCase, the service's own
# samples PascalCase. Active investigation words are degraded, with the vendor's word kept.
_GRAPH_STATES: dict[str, State] = {
    "serviceinterruption": "down",
    "servicedegradation": "degraded",
    "extendedrecovery": "degraded",
    "investigating": "degraded",
    "restoringservice": "degraded",
    "verifyingservice": "degraded",
    "investigationsuspended": "degraded",
    "serviceoperational": "up",
    "servicerestored": "up",
    "falsepositive": "up",
    "postincidentreviewpublished": "up",
    "resolved": "up",
    "resolvedexternal": "up",
    "mitigated": "up",
    "mitigatedexternal": "up",
}
_ARM_STATES: dict[str, State] = {
    "available": "up",
    "degraded": "degraded",
    "unavailable": "down",
    "unknown": "unknown",
}


@dataclass(frozen=True, slots=True)
class VendorStatus:
    """The vendor's view of one of our catalog services.

    ``status`` is ours, ``vendor_status`` the vendor's own word ("ServiceDegradation",
    "Unavailable", "ServiceIssue"). The issue fields describe the most relevant
    active vendor issue or event for the service, if any; ``latest_post`` is plain
    text, at most about 300 characters; ``start`` is a Unix time.
    """

    service: str
    source: Source
    status: State
    vendor_status: str = ""
    issue_id: str | None = None
    title: str | None = None
    latest_post: str | None = None
    classification: str | None = None
    start: float | None = None
    planned_maintenance: bool = False
    # the announced planned maintenance, when the feed gives its times (Unix times)
    maintenance_start: float | None = None
    maintenance_end: float | None = None

    @property
    def impaired(self) -> bool:
        return self.status in ("degraded", "down")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def graph_state(word: object) -> State:
    """Our status for a Graph serviceHealthStatus word (any case); unknown words are unknown."""
    return _GRAPH_STATES.get(word.lower(), "unknown") if isinstance(word, str) else "unknown"


def arm_state(word: object) -> State:
    """Our status for a Resource Health availabilityState (any case)."""
    return _ARM_STATES.get(word.lower(), "unknown") if isinstance(word, str) else "unknown"


def worst(states: Iterable[State]) -> State:
    return max(states, key=SEVERITY.__getitem__, default="unknown")


_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|ul|ol|tr|td|th|table|h[1-6])\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def plain_text(value: object, limit: int = 300) -> str | None:
    """Vendor HTML as one line of plain text, cut to ``limit`` characters."""
    if not isinstance(value, str):
        return None
    text = " ".join(html.unescape(_TAG.sub("", _BLOCK_TAG.sub(" ", value))).split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def text(value: object) -> str | None:
    """A string field of a vendor document, None when absent or empty."""
    return value if isinstance(value, str) and value else None


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON list field; [] when the field is absent or not a list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def timestamp(value: object) -> float | None:
    """Unix time of an ISO 8601 vendor timestamp (UTC when no offset is given)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.year < 1971:  # ARM sends 0001-01-01T00:00:00 for "not set"
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def vendor_result(
    statuses: list[VendorStatus],
    *,
    started: float,
    ctx: ProbeContext,
    issues_active: int,
    pages: int,
    fetched_at: float,
    notes: Iterable[str] = (),
) -> ProbeResult:
    """A successful read: the vendor's view, a one-line summary and the facts."""
    impaired = [s for s in statuses if s.impaired]
    summary = [f"vendor reports {s.service} {s.status}{_detail(s)}" for s in impaired]
    reason = "; ".join([*summary, *notes])
    return ProbeResult(
        success=True,
        duration=ctx.monotonic() - started,
        reason=reason if len(reason) <= 300 else reason[:299] + "…",
        facts={
            "vendor_services_impaired": float(len(impaired)),
            "vendor_issues_active": float(issues_active),
            "vendor_api_pages": float(pages),
            "vendor_state_age_seconds": max(0.0, ctx.wall() - fetched_at),
        },
        vendor=statuses,
    )


def _detail(status: VendorStatus) -> str:
    words = [word for word in (status.vendor_status, status.issue_id) if word]
    return f" ({', '.join(words)})" if words else ""


def vendor_failure(
    services: Iterable[str], source: Source, reason: str, started: float, ctx: ProbeContext
) -> ProbeResult:
    """The vendor API could not be read: every mapped service's vendor state is unknown."""
    result = failure(reason, started, ctx)
    result.vendor = [
        VendorStatus(service, source, "unknown") for service in dict.fromkeys(services)
    ]
    return result
