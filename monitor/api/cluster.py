"""``GET /api/v1/cluster``: the members, who leads in which epoch, who probes how much.

Read from the store on every request (any node answers the same), so an
operator can ask whichever node is up. A read like the others: open unless
``monitor.protect_reads``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from monitor.api.auth import require_read
from monitor.api.services import SERVICES, ApiServices
from monitor.cluster.sharding import owner, subscription_key


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/cluster", cluster_status)


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


async def cluster_status(request: web.Request) -> web.Response:
    require_read(request)
    daemon = request.app[SERVICES]
    if daemon.cluster is None:
        return web.json_response(
            {
                "status": "error",
                "message": "this node is not in a cluster: set monitor.cluster "
                "(with a PostgreSQL monitor.store) to run several nodes",
            },
            status=404,
        )
    return web.json_response(await cluster_document(daemon))


def _targets_per_node(daemon: ApiServices) -> dict[str, int]:
    """How many targets each live node on this config probes, by the same hashing."""
    assert daemon.cluster is not None
    catalog = daemon.catalog
    if catalog is None:
        return {}
    shares = daemon.cluster.shares(subscription_key(*key) for key in catalog.subscriptions)
    sizes = {
        subscription_key(*key): len(subscription.target_ids)
        for key, subscription in catalog.subscriptions.items()
    }
    return {node: sum(sizes[key] for key in share) for node, share in shares.items()}


async def cluster_document(daemon: ApiServices) -> dict[str, Any]:
    """The cluster as the store has it now, judged by the database's clock."""
    node = daemon.cluster
    assert node is not None
    members, now = await node.store.members(node.settings.dead_after)
    lease, _ = await node.store.leader_lease()
    leader = lease.holder if lease is not None and lease.expires_at >= now else None
    targets = _targets_per_node(daemon)
    targets[node.node_id] = daemon.scheduled_targets  # what this node really has scheduled
    return {
        "node": node.node_id,
        "generated_at": _iso(now),
        "config_digest": node.config_digest,
        "leader": None
        if lease is None
        else {
            "node": lease.holder,
            "epoch": lease.epoch,
            "since": _iso(lease.acquired_at),
            "expires_at": _iso(lease.expires_at),
            "expired": lease.expires_at < now,
        },
        "members": [
            {
                "node": member.node_id,
                "listen": member.listen,
                "alive": member.alive,
                "leader": member.node_id == leader,
                "last_heartbeat": _iso(member.heartbeat_at),
                "heartbeat_age_seconds": round(max(0.0, now - member.heartbeat_at), 3),
                "started_at": _iso(member.started_at),
                "version": member.version,
                "config_digest": member.config_digest,
                "same_config": member.config_digest == node.config_digest,
                # a node on another config weighs another catalog: its count is its own
                "targets": targets.get(member.node_id, 0)
                if member.config_digest == node.config_digest
                else None,
            }
            for member in members
        ],
    }


async def add_other_nodes_subscriptions(
    daemon: ApiServices, document: dict[str, Any], query: Any
) -> None:
    """A node's board holds only its shard: the other subscriptions' status comes from the
    store (their last recorded status and since; their checks are on their own node)."""
    node, catalog = daemon.cluster, daemon.catalog
    if node is None or catalog is None:
        return
    rows: list[dict[str, Any]] = document["subscriptions"]
    for row in rows:
        row["probed_by"] = node.node_id
    shown = {(row["customer"], row["service"]) for row in rows}
    wanted = {key: query.get(key) for key in ("customer", "service", "status")}
    others = [
        key
        for key in catalog.subscriptions
        if key not in shown
        and not node.owns(subscription_key(*key))
        and wanted["customer"] in (None, key[0])
        and wanted["service"] in (None, key[1])
    ]
    recorded = await node.store.latest_statuses(others) if others else {}
    for key in others:
        status, since = recorded.get(key, ("unknown", None))
        if wanted["status"] not in (None, status):
            continue
        rows.append(
            {
                "customer": key[0],
                "customer_name": catalog.customers[key[0]].name,
                "service": key[1],
                "service_name": catalog.services[key[1]].name,
                "status": status,
                "since": since,
                "reason": "",
                "checks": [],
                "vendor": [],
                "probed_by": owner(subscription_key(*key), node.peers),
            }
        )
