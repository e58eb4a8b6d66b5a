"""The Config page: which config runs (its digest), the last reload and its errors, and
the cluster as ``GET /api/v1/cluster`` has it, when this node is in one. Role read.

The cluster part is that same document (``cluster_document``), so the page and the
API never disagree; a node whose store cannot answer shows why instead of the table.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from monitor.api.cluster import cluster_document
from monitor.api.services import SERVICES
from monitor.console.access import render, require_visitor

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/config", config_page)


async def _cluster(request: web.Request) -> tuple[dict[str, Any] | None, bool]:
    """(the cluster document, whether the store failed to answer)."""
    services = request.app[SERVICES]
    if services.cluster is None:
        return None, False
    try:
        return await cluster_document(services), False
    except Exception:  # the store is away: the page still shows the config
        log.exception("event=console_cluster_unreadable")
        return None, True


async def config_page(request: web.Request) -> web.Response:
    who = require_visitor(request)
    services = request.app[SERVICES]
    catalog = services.catalog
    assert catalog is not None  # require_visitor answered 503 otherwise
    history = services.config_history
    cluster, cluster_failed = await _cluster(request)
    return render(
        request,
        "config.html.j2",
        who,
        source=catalog.source,
        digest=catalog.digest,
        loaded=history.loaded,
        last_reload=history.last_reload,
        outcomes=history.outcomes,
        counts={
            "customers": len(catalog.customers),
            "services": len(catalog.services),
            "subscriptions": len(catalog.subscriptions),
            "targets": len(catalog.targets),
            "scheduled": services.scheduled_targets,
        },
        cluster=cluster,
        cluster_failed=cluster_failed,
    )
