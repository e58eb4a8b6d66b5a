"""``m365_messages``: a tenant's Microsoft 365 Message Center posts (planned changes).

Reads ``GET {graph_base}/admin/serviceAnnouncement/messages`` for one customer tenant
(Graph operated by 21Vianet; application permission ServiceMessage.Read.All), paged
with ``@odata.nextLink`` and ``Prefer: odata.maxpagesize``. The first read takes every
post; later reads ask only for posts changed since the newest ``lastModifiedDateTime``
seen (the watermark) and merge them in, with a full read every ``full_read_every`` so
that posts the vendor withdrew disappear. Tokens, the shared read (one per tenant per
``reuse_within`` for every check of that tenant), throttling and stale state are
``vendor_api``'s, as for ``m365_health``.

The result carries every current post of the tenant in ``ProbeResult.messages``; the
daemon's message board (``monitor/message_center.py``) de-duplicates them across
tenants and proposes maintenance windows. A Graph that cannot be read is ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, SecretStr
from yarl import URL

from checks.vendor_api import Credentials, VendorApi, VendorApiError, read_shared, vendor_cache
from checks.vendor_common import CatalogService, text, timestamp
from monitor.config_types import Duration
from monitor.message_center import CATEGORIES, SEVERITIES, VendorMessage, canonical
from monitor.probe import CheckOptions, ProbeContext, ProbeResult, Target

FAILURE_IS_UNKNOWN = True  # a Graph outage says nothing about the customer's services
METRIC_HELP = {
    "vendor_messages": "Message Center posts the tenant lists now",
    "vendor_api_pages": "Pages Graph returned for the last read",
}
_FEEDS_KEY = "m365_message_feeds"


class Options(CheckOptions):
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
    graph_base: str = Field(
        "https://microsoftgraph.chinacloudapi.cn/v1.0",
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="Microsoft Graph base URL with its version",
    )
    services: dict[str, CatalogService] = Field(
        min_length=1,
        description="Graph service name (Exchange Online, SharePoint Online …, any case) → "
        "our catalog service id; posts about other services are listed, but propose no window",
    )
    page_size: int = Field(100, ge=1, le=1000, description="Prefer: odata.maxpagesize")
    max_pages: int = Field(20, ge=1, le=200, description="Pages read per read at most")
    reuse_within: Duration = Field(
        3540.0, description="Checks of the same tenant share one read this long"
    )
    max_stale: Duration = Field(
        21600.0, description="While throttled, show the last posts read if not older than this"
    )
    full_read_every: Duration = Field(
        86400.0, description="Read every post again this often (withdrawn posts disappear)"
    )


@dataclass
class _Feed:
    """A tenant's posts as last merged, and the watermark for the next read."""

    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    watermark: str | None = None  # the newest lastModifiedDateTime seen, as Graph wrote it
    full_read_at: float = 0.0


@dataclass(frozen=True)
class _Read:
    posts: dict[str, dict[str, Any]]
    pages: int
    truncated: bool


def _feeds(ctx: ProbeContext) -> dict[tuple[str, ...], _Feed]:
    feeds = ctx.cache.get(_FEEDS_KEY)
    if not isinstance(feeds, dict):
        feeds = ctx.cache[_FEEDS_KEY] = {}
    return feeds


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
    api = VendorApi(ctx, credentials, "grant the app ServiceMessage.Read.All (application)")
    key = ("m365_messages", base, opts.tenant.lower(), opts.client_id)
    vendor_cache(ctx)  # the shared cache exists before the first read
    feed = _feeds(ctx).setdefault(key, _Feed())
    reading = await read_shared(
        ctx, key, lambda: _read(api, base, opts, feed, ctx), opts.reuse_within, opts.max_stale
    )
    duration = ctx.monotonic() - started
    if reading.document is None:
        return ProbeResult(False, duration, f"Message Center: {reading.reason}")
    read = reading.document
    parsed = (_message(post, opts.services) for post in read.posts.values())
    messages = sorted((m for m in parsed if m is not None), key=lambda m: m.id)
    notes = [f"{len(messages)} Message Center posts"]
    if read.truncated:
        notes.append(f"more than {opts.max_pages} pages")
    if reading.note:
        notes.append(reading.note)
    return ProbeResult(
        True,
        duration,
        "; ".join(notes),
        facts={"vendor_messages": float(len(messages)), "vendor_api_pages": float(read.pages)},
        messages=messages,
    )


async def _read(api: VendorApi, base: str, opts: Options, feed: _Feed, ctx: ProbeContext) -> _Read:
    url = f"{base}/admin/serviceAnnouncement/messages"
    now = ctx.wall()
    full = feed.watermark is None or now - feed.full_read_at >= opts.full_read_every
    if not full:
        # Encoded by hand: OData wants %20, yarl would write '+'.
        url += f"?$filter=lastModifiedDateTime%20gt%20{feed.watermark}"
    headers = {"Prefer": f"odata.maxpagesize={opts.page_size}"}
    items, truncated = await api.collect(
        url, "Graph messages", "@odata.nextLink", opts.max_pages, headers=headers
    )
    posts = {} if full else dict(feed.posts)
    for item in items:
        post_id = text(item.get("id"))
        if post_id is None:
            continue
        known = posts.get(post_id)
        if known is None or _modified(item) >= _modified(known):
            posts[post_id] = item
    if full and truncated and feed.posts:  # a cut full read must not drop the rest
        posts = {**feed.posts, **posts}
    # the watermark is the newest change seen, as Graph wrote it (an empty tenant: now)
    newest = max(posts.values(), key=_modified, default=None)
    watermark = text(newest.get("lastModifiedDateTime")) if newest else _graph_time(now)
    if watermark is None or (newest is not None and not _modified(newest)):
        raise VendorApiError("Graph messages: posts without lastModifiedDateTime")
    feed.posts, feed.watermark = posts, watermark
    if full:
        feed.full_read_at = now
    return _Read(dict(posts), api.pages, truncated)


def _modified(post: dict[str, Any]) -> float:
    return timestamp(post.get("lastModifiedDateTime")) or 0.0


def _graph_time(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(post: dict[str, Any], mapping: dict[str, str]) -> VendorMessage | None:
    post_id = text(post.get("id"))
    if post_id is None:
        return None
    wanted = {name.lower(): service for name, service in mapping.items()}
    vendor_services = tuple(
        name for name in post.get("services") or () if isinstance(name, str) and name
    )
    services = tuple(
        dict.fromkeys(wanted[name.lower()] for name in vendor_services if name.lower() in wanted)
    )
    return VendorMessage(
        id=post_id,
        title=text(post.get("title")) or post_id,
        category=canonical(post.get("category"), CATEGORIES),
        severity=canonical(post.get("severity"), SEVERITIES),
        services=services,
        vendor_services=vendor_services,
        last_modified=_modified(post),
        start=timestamp(post.get("startDateTime")),
        end=timestamp(post.get("endDateTime")),
        action_required_by=timestamp(post.get("actionRequiredByDateTime")),
        major_change=post.get("isMajorChange") is True,
    )
