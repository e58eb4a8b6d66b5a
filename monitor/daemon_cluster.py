"""The daemon as a member of a cluster: its shard, joining, takeovers and reshards.

A part of ``Daemon`` (monitor/daemon.py) kept apart because it is one idea: which
subscriptions this node probes, and what happens to their statuses when the
members change. The attributes declared below are the daemon's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.alerting import Alerting, store_url
from monitor.canaries import SightKeeper
from monitor.catalog import Catalog, Subscription, TargetSpec
from monitor.cluster.node import ClusterNode
from monitor.cluster.sharding import subscription_key
from monitor.cluster.takeover import seed_board
from monitor.locations import LocationDesk
from monitor.probe import Status
from monitor.scheduler import ProbeScheduler
from monitor.status import StatusBoard
from monitor.store import Store

log = logging.getLogger("monitor.daemon")

# Subscriptions that come to or leave this node per step of a reshard (see _apply_in_steps).
RESHARD_STEP = 500


class ClusterMember:
    """Sharding, joining and taking over, for ``Daemon``."""

    # the daemon's (monitor/daemon.py)
    cluster: ClusterNode | None
    catalog: Catalog | None
    board: StatusBoard
    alerting: Alerting
    sight: SightKeeper
    registry: CollectorRegistry
    config_path: Path
    scheduler: ProbeScheduler
    desk: LocationDesk | None
    wall: Callable[[], float]
    _listen_override: str | None
    _subscriptions_shown: set[tuple[str, str]]
    _reshards: set[asyncio.Task[None]]
    _reload_lock: asyncio.Lock
    _stop: asyncio.Event

    def _apply(
        self, catalog: Catalog, owned: dict[tuple[str, str], Subscription] | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        raise NotImplementedError  # the daemon's: schedules what this node owns

    async def _apply_in_steps(self, catalog: Catalog) -> tuple[list[str], list[str], list[str]]:
        """``_apply`` for a reshard, the subscriptions that come and go taken
        ``RESHARD_STEP`` at a time and the loop let run between steps: a node taking a
        dead node's share of tens of thousands of targets in one go stalled its probes and
        its own lease renewals for seconds (bench/cluster_scale.py).

        A step costs only what it moves (``_apply_step``): steps that each compared the
        whole catalog held the loop 130 ms apiece at 30,000 targets, twenty of them back
        to back when 10,000 came, and the runs due meanwhile queued up. The first runs of
        all the targets that come are planned at once, spread over one interval from the
        start, and the steps take them in that order, so each step is ahead of its first
        runs and every target that came is first probed within one interval of the start
        (spread step by step, the last would have waited the reshard's time more). With
        targets probed from locations, a last whole ``_apply`` settles those (they follow
        their locations, not the shard)."""
        owned = self._owned_subscriptions(catalog)
        shown = self._subscriptions_shown
        located = catalog.located

        def stepped(key: tuple[str, str]) -> bool:
            # a subscription with targets probed from locations (they follow their
            # locations, not the shard) is the last whole ``_apply``'s
            return not located or located.isdisjoint(catalog.subscriptions[key].target_ids)

        leaving = [
            key
            for key in shown
            if key in catalog.subscriptions and key not in owned and stepped(key)
        ]
        coming = [key for key in owned if key not in shown and stepped(key)]
        specs = {key: [catalog.targets[tid] for tid in owned[key].target_ids] for key in coming}
        starts = self.scheduler.spread(
            (spec for group in specs.values() for spec in group), self.wall()
        )
        # a subscription comes in the step of its earliest first run
        coming.sort(key=lambda key: min((starts[s.target.id] for s in specs[key]), default=0.0))
        added: list[str] = []
        removed: list[str] = []
        for index in range(0, max(len(leaving), len(coming)), RESHARD_STEP):
            came, went = self._apply_step(
                catalog,
                coming[index : index + RESHARD_STEP],
                leaving[index : index + RESHARD_STEP],
                specs,
                starts,
            )
            added += came
            removed += went
            await asyncio.sleep(0)
            if self._stop.is_set():
                return added, [], removed  # stopping: the rest would be undone at once
        if not located:
            return added, [], removed  # the steps did it all
        done = self._apply(catalog, owned)
        return added + done[0], done[1], removed + done[2]

    def _apply_step(
        self,
        catalog: Catalog,
        coming: list[tuple[str, str]],
        leaving: list[tuple[str, str]],
        specs: Mapping[tuple[str, str], list[TargetSpec]],
        starts: Mapping[str, float],
    ) -> tuple[list[str], list[str]]:
        """One step of a reshard: the subscriptions ``coming`` are scheduled (their targets
        in ``specs``, first at their ``starts``), those ``leaving`` are not (none of them
        with targets probed from locations); returns the target ids (added, removed)."""
        added = self.scheduler.add([spec for key in coming for spec in specs[key]], starts)
        removed = self.scheduler.remove(
            tid for key in leaving for tid in catalog.subscriptions[key].target_ids
        )
        self._subscriptions_shown.difference_update(leaving)
        self._subscriptions_shown.update(coming)
        fresh = {key: catalog.subscriptions[key] for key in coming}
        self._rescheduled(catalog, added, [], removed, set(leaving), fresh, self.wall())
        return added, removed

    def _rescheduled(
        self,
        catalog: Catalog,
        added: list[str],
        changed: list[str],
        removed: list[str],
        gone: Collection[tuple[str, str]],
        fresh: Mapping[tuple[str, str], Subscription],
        now: float,
    ) -> None:
        raise NotImplementedError  # the daemon's: the board and metrics follow the schedule

    def _owned_subscriptions(self, catalog: Catalog) -> dict[tuple[str, str], Subscription]:
        """The subscriptions this node probes: all of them, or its shard in a cluster."""
        if self.cluster is None:
            return catalog.subscriptions
        owns = self.cluster.owns
        return {k: s for k, s in catalog.subscriptions.items() if owns(subscription_key(*k))}

    async def _join_cluster(self, catalog: Catalog) -> None:
        """With ``monitor.cluster``: the first heartbeat, so the shard is known before
        anything is scheduled, and the shard's last statuses from the store."""
        settings = catalog.config.monitor
        cluster = settings.cluster
        if cluster is None or not cluster.enabled or self.cluster is not None:
            return
        node_id = cluster.node_id
        url = store_url(catalog, self.config_path.resolve().parent)
        # its own connections: heartbeats and the leader's lease never queue behind history
        store = await Store.open(url, application_name=f"csp-monitor {node_id}")

        def heartbeat_store() -> Awaitable[Store]:
            # the heartbeat thread's own, on its own loop: a busy event loop here (start-up,
            # a reshard, probing at full load) does not delay the member row
            return Store.open(url, application_name=f"csp-monitor {node_id} heartbeat")

        self.cluster = ClusterNode(
            store,
            cluster,
            self.registry,
            listen=cluster.advertise or self._listen_override or settings.listen,
            version=__version__,
            started_at=self.wall(),
            on_shard_changed=self._shard_changed,
            on_lead=lambda epoch: self.alerting.lead(node_id, epoch),
            on_step_down=lambda epoch: self.alerting.step_down(),
            blind=lambda: self.sight.sight.blind,
            location=settings.location,
            heartbeat_store=heartbeat_store,
        )
        # a leader that cannot renew stops at two thirds of its lease; the others wait for
        # all of it: its notifier gets half of the third between to finish its step
        self.alerting.step_down_grace = cluster.lease_seconds / 6
        self.alerting.kept_open = self._kept_open
        try:
            # no lease before the start-up is done: its busy loop could not renew one in
            # time, and leadership went from node to node while three nodes started
            await self.cluster.start(catalog.digest, lead=False)
            if len(self.cluster.peers) > 1:
                # taken over from live nodes: their history goes on; after a stop of the
                # whole cluster it starts from unknown instead, the time between is a gap
                await self._seed(catalog, self._owned_subscriptions(catalog))
        except BaseException:
            await self.cluster.close()
            await store.close()
            self.cluster = None
            raise
        log.info(
            "event=cluster_joined node=%s members=%s leader=%s",
            self.cluster.node_id,
            ",".join(self.cluster.peers),
            self.cluster.leadership.is_leader,
        )

    def _kept_open(self) -> set[tuple[str, str]]:
        """Status intervals this node must not end when it starts or stops: while other
        live nodes run this config, they go on watching every subscription."""
        if self.cluster is None or self.catalog is None or len(self.cluster.peers) < 2:
            return set()
        return set(self.catalog.subscriptions)

    async def _seed(
        self, catalog: Catalog, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, float]]:
        """Targets taken over start from their subscription's last recorded status;
        returns the statuses they started from."""
        assert self.cluster is not None
        fresh = [key for key in keys if key not in self._subscriptions_shown]
        if not fresh:
            return {}
        try:
            statuses = await self.cluster.store.latest_statuses(fresh)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=cluster_seed_failed subscriptions=%d", len(fresh))
            return {}
        seeded = seed_board(self.board, catalog, statuses, self.wall())
        log.info("event=cluster_taken_over subscriptions=%d seeded=%d", len(fresh), len(seeded))
        return {key: statuses[key] for key in seeded}

    async def _record_unwatched(
        self, catalog: Catalog, seeded: Mapping[tuple[str, str], tuple[str, float]]
    ) -> None:
        """Subscriptions taken from a node that died were watched by nobody from its last
        heartbeat until now: that time is a gap (unknown) in their history, and they go
        on from now in the status they had (the next probe confirms or changes it).

        Two changes a subscription, ``RESHARD_STEP`` subscriptions at a time with the loop
        let run between: 10,000 taken over are 20,000 changes to encode and queue. All are
        queued before any of these targets is scheduled (``_apply_in_steps`` comes after),
        so the leader applies a gap before anything a first probe finds."""
        assert self.cluster is not None
        dead = self.cluster.taken_from_the_dead(subscription_key(*key) for key in seeded)
        now = self.wall()
        resumed: dict[tuple[str, str], tuple[str, float]] = {}
        for (customer, service), (status, since) in seeded.items():
            found = dead.get(subscription_key(customer, service))
            if found is None:
                continue
            node, last_heartbeat = found
            held = Status(status)
            gap_from = min(max(last_heartbeat, since), now)
            self.alerting.subscription_changed(
                customer,
                service,
                held,
                Status.UNKNOWN,
                f"not probed: node {node} stopped at its last heartbeat",
                now,
                since=gap_from,
            )
            self.alerting.subscription_changed(
                customer, service, Status.UNKNOWN, held, f"probed by {self.cluster.node_id}", now
            )
            resumed[(customer, service)] = (status, now)
            if len(resumed) % RESHARD_STEP == 0:
                await asyncio.sleep(0)
        # known again from now, here as in the history every node reads
        seed_board(self.board, catalog, resumed, now)

    def _shard_changed(self) -> None:
        task = asyncio.ensure_future(self._reshard())
        self._reshards.add(task)  # a task nobody holds may be collected mid-way
        task.add_done_callback(self._reshards.discard)

    async def _reshard(self) -> None:
        """The members changed: schedule what this node now owns (first probes spread over
        one interval), drop what it lost (its series leave /metrics)."""
        try:
            async with self._reload_lock:
                catalog = self.catalog
                if catalog is None or self._stop.is_set():
                    return
                began = time.perf_counter()
                seeded = await self._seed(catalog, self._owned_subscriptions(catalog))
                if self.desk is not None:
                    self.desk.read_everything_again()
                seeded_at = time.perf_counter()
                await self._record_unwatched(catalog, seeded)
                recorded_at = time.perf_counter()
                added, _, removed = await self._apply_in_steps(catalog)
                # how long each part took (wall time, the loop running other work between)
                log.info(
                    "event=cluster_reshard node=%s added=%d removed=%d targets=%d "
                    "seed_s=%.3f unwatched_s=%.3f apply_s=%.3f",
                    self.cluster.node_id if self.cluster else "",
                    len(added),
                    len(removed),
                    len(self.scheduler),
                    seeded_at - began,
                    recorded_at - seeded_at,
                    time.perf_counter() - recorded_at,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=cluster_reshard_failed")
