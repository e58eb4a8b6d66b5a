"""This daemon as a member of a cluster: heartbeats, the members' view, its shard, leadership.

Every ``heartbeat_interval`` the node upserts its member row, reads every
member, renews (or tries to take) the leader's lease, and works out its shard:
the subscriptions rendezvous hashing gives it among the live members that run
the same config (same digest). Nodes on another config are left out of the
hashing (they would weigh a different catalog) and reported in the log and in
``csp_monitor_cluster_config_mismatch``; they do not take this node's targets
and this node does not take theirs.

When the database cannot be reached the node keeps probing the shard it had
(better two nodes probing a target than none) and the leader steps down on
time (see leadership.py).

Given ``heartbeat_store``, the member row itself is written from a thread of its
own (heartbeat.py), so that a busy event loop (a start-up, a reshard, probing at
full load) does not get the node declared dead; this loop then only stamps its
progress for that thread, reads the members and renews leadership.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.cluster.heartbeat import Announcement, HeartbeatThread, stuck_after
from monitor.cluster.leadership import Leadership
from monitor.cluster.sharding import assign, owner
from monitor.config import ClusterSettings
from monitor.store import Store
from monitor.store.cluster import Member

log = logging.getLogger(__name__)

ShardChanged = Callable[[], None]

# Heartbeats tried at start-up before the node goes on alone (each bounded in time).
FIRST_VIEW_ATTEMPTS = 3
# Further views a starting node takes, a heartbeat apart, while the cluster looks like it is
# starting too (see ClusterNode._settle): at most this many heartbeats of delay.
SETTLE_VIEWS = 3


class ClusterMetrics:
    """The node's view of the cluster, for Prometheus (each node exports its own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.members = Gauge(
            "csp_monitor_cluster_members",
            "Live members of the cluster as this node sees them (any config)",
            registry=registry,
        )
        self.leader = Gauge(
            "csp_monitor_cluster_leader",
            "1 on the node that holds the leader's lease, else 0",
            ["node"],
            registry=registry,
        )
        self.epoch = Gauge(
            "csp_monitor_cluster_leader_epoch",
            "Fencing epoch of the current leader's term, as last seen by this node",
            registry=registry,
        )
        self.targets = Gauge(
            "csp_monitor_cluster_targets",
            "Targets this node probes (its shard)",
            ["node"],
            registry=registry,
        )
        self.member_up = Gauge(
            "csp_monitor_cluster_member_up",
            "1 for each member alive by the database's clock, 0 for one that stopped beating "
            "(a clean stop removes the member)",
            ["node"],
            registry=registry,
        )
        self.config_mismatch = Gauge(
            "csp_monitor_cluster_config_mismatch",
            "Live members running a config whose digest differs from this node's",
            registry=registry,
        )
        self.leader_changes = Counter(
            "csp_monitor_cluster_leader_changes",
            "Leadership gained or lost by this node",
            ["change"],
            registry=registry,
        )
        for change in ("gained", "lost"):
            self.leader_changes.labels(change)
        self.heartbeat_failures = Counter(
            "csp_monitor_cluster_heartbeat_failures",
            "Heartbeats that could not be written to the store",
            registry=registry,
        )


@dataclass
class ClusterView:
    """The members as last read, judged by the database's clock."""

    members: list[Member] = field(default_factory=list)
    database_time: float = 0.0
    lease_holder: str | None = None
    lease_epoch: int | None = None
    lease_expires_at: float | None = None


class ClusterNode:
    """Heartbeats, the view of the members, this node's shard and its leadership."""

    def __init__(
        self,
        store: Store,
        settings: ClusterSettings,
        registry: CollectorRegistry,
        *,
        listen: str,
        version: str,
        started_at: float,
        on_shard_changed: ShardChanged = lambda: None,
        on_lead: Callable[[int], None] = lambda epoch: None,
        on_step_down: Callable[[int], None] = lambda epoch: None,
        blind: Callable[[], bool] = lambda: False,
        location: str = "default",
        heartbeat_store: Callable[[], Awaitable[Store]] | None = None,
    ) -> None:
        self.store = store
        self.location = location
        self.settings = settings
        self.node_id = settings.node_id
        self.listen = listen
        self.version = version
        self.started_at = started_at
        self.config_digest = ""
        self.metrics = ClusterMetrics(registry)
        self.metrics.leader.labels(self.node_id).set(0)
        self.view = ClusterView()
        self.peers: tuple[str, ...] = (self.node_id,)  # live members with this config
        self.previous_peers: tuple[str, ...] = self.peers  # before the last change
        self.peer_locations: dict[str, str] = {self.node_id: location}  # each peer's location
        self.stopped_beating: dict[str, float] = {}  # dead members: their last heartbeat
        self._mismatched: tuple[str, ...] = ()
        self._on_shard_changed = on_shard_changed
        self._on_lead, self._on_step_down = on_lead, on_step_down
        self._blind = blind
        self._stop = asyncio.Event()
        self._beat_now = asyncio.Event()  # set: the next heartbeat comes at once
        self._task: asyncio.Task[None] | None = None
        # opens the heartbeat thread's own store (None: this loop writes the member row)
        self._heartbeat_store = heartbeat_store
        self._heartbeats: HeartbeatThread | None = None
        self._progress_timer: asyncio.Handle | None = None
        self._may_lead = True  # see start(lead=...)
        self.leadership = Leadership(
            store,
            self.node_id,
            settings.lease_seconds,
            on_gain=self._gained,
            on_loss=self._lost,
        )

    # ------------------------------------------------------------------ shard

    def owns(self, key: str) -> bool:
        """Whether this node probes the subscription with shard key ``key``."""
        return owner(key, self.peers) == self.node_id

    def owns_at(self, key: str, location: str) -> bool:
        """Whether this node probes ``key`` for ``location``: rendezvous hashing among the
        peers of that location (never, when this node is elsewhere)."""
        if location != self.location:
            return False
        here = [node for node in self.peers if self.peer_locations.get(node) == location]
        return owner(key, here) == self.node_id

    def locations_up(self) -> dict[str, bool]:
        """Every location a member (of any config) announced, and whether a live peer
        probes from it now."""
        seen = {m.location: False for m in self.view.members}
        seen[self.location] = False
        for node in self.peers:
            seen[self.peer_locations.get(node, "default")] = True
        return seen

    def shares(self, keys: Iterable[str]) -> dict[str, set[str]]:
        """Every peer's share of ``keys`` (members on another config are not in it)."""
        return assign(keys, self.peers)

    def taken_from_the_dead(self, keys: Iterable[str]) -> dict[str, tuple[str, float]]:
        """Of ``keys`` this node just took over, those whose previous owner died: each with
        that node and its last heartbeat (after which nobody probed the key)."""
        found: dict[str, tuple[str, float]] = {}
        for key in keys:
            before = owner(key, self.previous_peers)
            if before is not None and before in self.stopped_beating:
                found[key] = (before, self.stopped_beating[before])
        return found

    def leader_address(self) -> str | None:
        """Where the leader's API listens (its member row), as last read; None while no
        node holds an unexpired lease."""
        view = self.view
        if view.lease_holder is None or view.lease_expires_at is None:
            return None
        if view.lease_expires_at < view.database_time:
            return None
        for member in view.members:
            if member.node_id == view.lease_holder and member.alive:
                return member.listen
        return None

    def set_targets(self, count: int) -> None:
        self.metrics.targets.labels(self.node_id).set(count)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, config_digest: str, *, lead: bool = True) -> None:
        """The first heartbeat and view, before anything is scheduled; then the heartbeat
        thread (when there is one) and the loop.

        A first view that cannot be read is tried again (``FIRST_VIEW_ATTEMPTS``): a node
        without it believes itself alone and schedules every target, only to give most of
        them back a heartbeat later (seen with three nodes starting together, PostgreSQL
        slow to answer); while the cluster itself looks like it is starting, the node looks
        again until the members settle (``_settle``). ``lead=False``: take no lease before
        ``allow_leading()`` (a start-up's busy loop could not renew it in time)."""
        self.config_digest = config_digest
        self._may_lead = lead
        for attempt in range(1, FIRST_VIEW_ATTEMPTS + 1):
            if await self.beat() or attempt == FIRST_VIEW_ATTEMPTS:
                break
            await asyncio.sleep(self.settings.heartbeat_interval)
        await self._settle()
        if self._heartbeat_store is not None:
            await self._start_heartbeats(self._heartbeat_store)
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def _settle(self) -> None:
        """Nodes started together (a deployment, the whole cluster restarted) register a
        beat or so apart: the first to look sees itself alone, schedules every target, and
        gives two thirds back a heartbeat later, its loop swamped meanwhile (3 × 20,000
        targets: a 10 s backlog that took a minute to drain, bench/cluster_scale.py). So
        while this node sees nobody else, or members that started within ``dead_after``,
        it looks again a heartbeat later, until a look finds nobody new (at most
        ``SETTLE_VIEWS``), as Kafka delays a group's first rebalance. A node joining a
        running cluster sees members started long ago and is not delayed; a node alone
        waits one heartbeat."""
        for _ in range(SETTLE_VIEWS):
            if not self._cluster_starting():
                return
            seen = set(self.peers)
            await asyncio.sleep(self.settings.heartbeat_interval)
            if not await self.beat() or set(self.peers) <= seen:
                return

    def _cluster_starting(self) -> bool:
        others = [m for m in self.view.members if m.alive and m.node_id != self.node_id]
        recently = self.view.database_time - self.settings.dead_after
        return not others or any(m.started_at >= recently for m in others)

    def _announcement(self) -> Announcement:
        return Announcement(
            listen=self.listen,
            started_at=self.started_at,
            version=self.version,
            config_digest=self.config_digest,
            blind=self._blind(),
            location=self.location,
        )

    async def _start_heartbeats(self, open_store: Callable[[], Awaitable[Store]]) -> None:
        heartbeats = HeartbeatThread(
            open_store,
            self.node_id,
            self.settings.heartbeat_interval,
            stuck_after(self.settings.dead_after),
            self._announcement(),
            on_failure=self.metrics.heartbeat_failures.inc,  # prometheus_client: thread-safe
        )
        try:
            await heartbeats.start(within=self.settings.dead_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "event=cluster_heartbeat_thread_unavailable node=%s error=%s action=%r",
                self.node_id,
                type(exc).__name__,
                "heartbeats go on from the event loop: a long busy spell may get this node "
                "declared dead; check the connection to PostgreSQL",
            )
            return
        self._heartbeats = heartbeats
        self._progress_timer = asyncio.get_running_loop().call_soon(self._progressed)

    def _progressed(self) -> None:
        """A timer on this loop: while it runs, the loop makes progress and the heartbeat
        thread beats on (with what this loop would announce now)."""
        if self._heartbeats is None:
            return
        self._heartbeats.progressed(self._announcement())
        self._progress_timer = asyncio.get_running_loop().call_later(
            self.settings.heartbeat_interval, self._progressed
        )

    def reconfigure(self, config_digest: str) -> None:
        """A reload: the new digest is announced with the next heartbeat. The node id and
        timings stay as started (changing them needs a restart)."""
        self.config_digest = config_digest

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.settings.heartbeat_interval):
                    await self._beat_now.wait()
            except TimeoutError:
                pass
            if self._stop.is_set():
                return
            self._beat_now.clear()
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=cluster_heartbeat_failed node=%s", self.node_id)

    def allow_leading(self) -> None:
        """Take the leader's lease when it is free, from a heartbeat that comes at once."""
        self._may_lead = True
        self._beat_now.set()

    async def _renew(self) -> None:
        if self._may_lead or self.leadership.is_leader:
            await self.leadership.renew()

    async def beat(self) -> bool:
        """One heartbeat: write ours (unless the heartbeat thread does), read everyone's,
        renew leadership, recompute peers. False when the members could not be read."""
        try:
            async with asyncio.timeout(self.settings.heartbeat_interval * 2):
                if self._heartbeats is None or not self._heartbeats.running:
                    await self.store.heartbeat(self.node_id, **asdict(self._announcement()))
                members, now = await self.store.members(self.settings.dead_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.heartbeat_failures.inc()
            log.warning(
                "event=cluster_heartbeat_failed node=%s error=%s action=%r",
                self.node_id,
                type(exc).__name__,
                "check the connection to PostgreSQL; the node keeps probing its shard",
            )
            await self._renew()  # fails the same way; steps down on time
            return False
        await self._renew()
        self.view.members, self.view.database_time = members, now
        await self._read_lease()
        self._update_peers(members)
        return True

    async def _read_lease(self) -> None:
        try:
            lease, _ = await self.store.leader_lease()
        except asyncio.CancelledError:
            raise
        except Exception:
            return
        if lease is None:
            return
        self.view.lease_holder = lease.holder
        self.view.lease_epoch = lease.epoch
        self.view.lease_expires_at = lease.expires_at
        self.metrics.epoch.set(lease.epoch)

    def _update_peers(self, members: Collection[Member]) -> None:
        live = [m for m in members if m.alive]
        same = {m.node_id for m in live if m.config_digest == self.config_digest}
        same.add(self.node_id)  # this node is alive: it just beat
        # a blind node leaves the shard, so that nodes that can see probe its targets;
        # when every node is blind, each keeps its share (nobody could do better)
        blind = {m.node_id for m in live if m.blind}
        if self._blind():
            blind.add(self.node_id)
        else:
            blind.discard(self.node_id)
        peers = tuple(sorted(same - blind)) or tuple(sorted(same))
        locations = {m.node_id: m.location for m in live if m.node_id in peers}
        locations[self.node_id] = self.location
        mismatched = tuple(sorted(m.node_id for m in live if m.config_digest != self.config_digest))
        self.metrics.members.set(len({*(m.node_id for m in live), self.node_id}))
        self.metrics.member_up.clear()  # a member that left cleanly leaves the series too
        for member in members:
            self.metrics.member_up.labels(member.node_id).set(1 if member.alive else 0)
        self.metrics.member_up.labels(self.node_id).set(1)
        self.metrics.config_mismatch.set(len(mismatched))
        if mismatched != self._mismatched:
            if mismatched:
                log.warning(
                    "event=cluster_config_mismatch node=%s digest=%s others=%s action=%r",
                    self.node_id,
                    self.config_digest[:12],
                    ",".join(
                        f"{m.node_id}:{m.config_digest[:12]}"
                        for m in live
                        if m.node_id in mismatched
                    ),
                    "give every node the same config; until then they do not share targets",
                )
            else:
                log.info("event=cluster_config_agrees node=%s", self.node_id)
            self._mismatched = mismatched
        if peers != self.peers or locations != self.peer_locations:
            log.info(
                "event=cluster_members_changed node=%s before=%s after=%s",
                self.node_id,
                ",".join(self.peers),
                ",".join(peers),
            )
            self.previous_peers, self.peers = self.peers, peers
            self.peer_locations = locations
            self.stopped_beating = {m.node_id: m.heartbeat_at for m in members if not m.alive}
            self._on_shard_changed()

    # ------------------------------------------------------------------ leadership

    def _gained(self, epoch: int) -> None:
        self.metrics.leader.labels(self.node_id).set(1)
        self.metrics.epoch.set(epoch)
        self.metrics.leader_changes.labels("gained").inc()
        self.view.lease_holder, self.view.lease_epoch = self.node_id, epoch
        self._on_lead(epoch)

    def _lost(self, epoch: int) -> None:
        self.metrics.leader.labels(self.node_id).set(0)
        self.metrics.leader_changes.labels("lost").inc()
        self._on_step_down(epoch)

    async def close(self) -> None:
        """Stop beating, hand leadership over and leave the member list."""
        self._stop.set()
        self._beat_now.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        if self._heartbeats is not None:
            # before leaving: a heartbeat after it would bring the member row back
            await self._heartbeats.stop(within=self.settings.heartbeat_interval * 3)
            self._heartbeats = None
        await self.leadership.release()
        try:
            async with asyncio.timeout(self.settings.heartbeat_interval * 2):
                await self.store.leave(self.node_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event=cluster_leave_failed node=%s error=%s", self.node_id, exc)
