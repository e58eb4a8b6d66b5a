"""Cluster: its config, the sharding maths, membership and leadership in PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from monitor.catalog import load_catalog
from monitor.cluster.leadership import Leadership
from monitor.cluster.node import ClusterNode
from monitor.cluster.sharding import assign, owner, weight
from monitor.config import ClusterSettings, ConfigError
from monitor.store import Fenced, Store
from tests.conftest import PG_SERVER, pg_admin, wait_until

CONFIG = """
monitor:
  store: {store}
  audit_key: test-audit-key
  link_key: test-link-signing-key
  cluster: {cluster}
services:
  portal:
    name: Azure portal
    checks: [{{name: web, type: tcp, host: 127.0.0.1, port: 443}}]
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [portal]}}
"""


def write_config(tmp_path: Path, store: str, cluster: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(store=store, cluster=cluster))
    return path


def test_cluster_defaults_to_the_host_name_and_five_second_heartbeats(tmp_path: Path) -> None:
    path = write_config(tmp_path, "postgresql://postgres@127.0.0.1:5432/x", "{}")
    cluster = load_catalog(path, env={}).config.monitor.cluster
    assert cluster is not None
    assert (cluster.node_id, cluster.heartbeat_interval, cluster.dead_after) == (
        socket.gethostname(),
        5.0,
        20.0,
    )
    assert cluster.lease_seconds == 20.0


@pytest.mark.parametrize(
    "store", ["./data/monitor.db", "sqlite:///tmp/monitor.db", "null"], ids=["path", "url", "none"]
)
def test_a_cluster_on_sqlite_is_refused_naming_the_setting(tmp_path: Path, store: str) -> None:
    path = write_config(tmp_path, store, "{node_id: a}")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    [issue] = caught.value.issues
    assert issue.path == "monitor.cluster"
    assert "needs a PostgreSQL store" in issue.message


def test_a_cluster_without_shared_keys_is_refused_naming_each(tmp_path: Path) -> None:
    # each node would make its own: an ack link signed by one leader fails on the next
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG.format(store="postgresql://postgres@127.0.0.1/x", cluster="{node_id: a}")
        .replace("  audit_key: test-audit-key\n", "")
        .replace("  link_key: test-link-signing-key\n", "")
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [(i.path, "must share one" in i.message) for i in caught.value.issues] == [
        ("monitor.audit_key", True),
        ("monitor.link_key", True),
    ]


def test_a_disabled_cluster_runs_on_sqlite(tmp_path: Path) -> None:
    path = write_config(tmp_path, "./data/monitor.db", "{enabled: false}")
    assert load_catalog(path, env={}).config.monitor.cluster is not None


@pytest.mark.parametrize(
    ("cluster", "problem"),
    [
        ("{heartbeat_interval: 5s, dead_after: 12s}", "dead_after (12s)"),
        ("{heartbeat_interval: 5s, leader_lease: 14s}", "leader_lease (14s)"),
    ],
)
def test_a_deadline_shorter_than_three_heartbeats_is_refused(
    tmp_path: Path, cluster: str, problem: str
) -> None:
    path = write_config(tmp_path, "postgresql://postgres@127.0.0.1/x", cluster)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    assert [str(i) for i in caught.value.issues] == [
        f"monitor.cluster: {problem} must be at least three times heartbeat_interval (5s)"
    ]


# ------------------------------------------------------------------ membership and lease


async def test_members_are_alive_until_dead_after_by_the_database_clock(pg_database: str) -> None:
    async with await Store.open(pg_database) as store:
        for node in ("b", "a"):
            await store.heartbeat(
                node,
                listen=f"127.0.0.1:{ord(node)}",
                started_at=1.0,
                version="1",
                config_digest="d",
            )
        await pg_admin(
            pg_database.rsplit("/", 1)[1],
            "UPDATE members SET heartbeat_at = heartbeat_at - 30 WHERE node_id = 'b'",
        )
        found, now = await store.members(dead_after=20.0)
        assert [(m.node_id, m.alive) for m in found] == [("a", True), ("b", False)]
        assert found[0].listen == "127.0.0.1:97" and abs(now - time.time()) < 60
        await store.heartbeat(
            "b", listen="127.0.0.1:1", started_at=2.0, version="2", config_digest="e"
        )
        found, _ = await store.members(dead_after=20.0)
        assert [(m.node_id, m.alive, m.version, m.config_digest) for m in found] == [
            ("a", True, "1", "d"),
            ("b", True, "2", "e"),
        ]
        await store.leave("a")
        assert [m.node_id for m in (await store.members(20.0))[0]] == ["b"]


async def test_one_lease_holder_and_a_new_epoch_on_takeover(pg_database: str) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM leader_lease")
        first = await store.acquire_leadership("a", 10.0)
        assert first is not None and (first.holder, first.epoch) == ("a", 1)
        assert await store.acquire_leadership("b", 10.0) is None  # a holds it
        renewed = await store.acquire_leadership("a", 10.0)
        assert renewed is not None and renewed.epoch == 1  # a renewal keeps the term
        assert renewed.expires_at >= first.expires_at
        # a's lease runs out: b takes over in a new term; a's renewal then fails
        await pg_admin(database, "UPDATE leader_lease SET expires_at = expires_at - 60")
        taken = await store.acquire_leadership("b", 10.0)
        assert taken is not None and (taken.holder, taken.epoch) == ("b", 2)
        assert await store.acquire_leadership("a", 10.0) is None
        # a clean stop hands over at once, in a new term
        assert not await store.release_leadership("b", 1)  # an old term releases nothing
        assert await store.release_leadership("b", 2)
        again = await store.acquire_leadership("a", 10.0)
        assert again is not None and (again.holder, again.epoch) == ("a", 3)
        lease, _ = await store.leader_lease()
        assert lease == again


async def test_of_nodes_racing_for_a_free_lease_exactly_one_wins(pg_database: str) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM leader_lease")
        results = await asyncio.gather(*(store.acquire_leadership(f"n{i}", 10.0) for i in range(8)))
        assert len([lease for lease in results if lease is not None]) == 1


# ------------------------------------------------------------------ sharding

KEYS = [f"customer-{c}/service-{s}" for c in range(200) for s in range(10)]


def test_weights_are_stable_across_processes() -> None:
    # a fixed value: Python's hash() would differ from one process to the next
    assert weight("node-a", "contoso/exchange-online") == int.from_bytes(
        hashlib.blake2b(b"node-a\x00contoso/exchange-online", digest_size=8).digest(), "big"
    )


@pytest.mark.parametrize("nodes", [["a"], ["a", "b"], ["a", "b", "c"], list("abcdefg")])
def test_every_key_has_exactly_one_owner_and_shares_are_even(nodes: list[str]) -> None:
    shares = assign(KEYS, nodes)
    assert sorted(k for share in shares.values() for k in share) == sorted(KEYS)
    fair = len(KEYS) / len(nodes)
    assert all(0.75 * fair <= len(share) <= 1.25 * fair for share in shares.values()), {
        n: len(s) for n, s in shares.items()
    }
    assert all(owner(key, nodes) in nodes for key in KEYS[:50])
    assert assign(KEYS, []) == {} and owner("x", []) is None


@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_node_leaving_moves_only_its_own_keys_spread_over_the_others(count: int) -> None:
    nodes = [f"node-{i}" for i in range(count)]
    before = assign(KEYS, nodes)
    gone = nodes[1]
    after = assign(KEYS, [n for n in nodes if n != gone])
    for node in after:
        assert before[node] <= after[node]  # nobody lost a key
        gained = after[node] - before[node]
        assert gained <= before[gone]  # what moved came from the node that left
        if count > 2:
            assert gained, f"{node} took none of {gone}'s keys"


@pytest.mark.parametrize("count", [1, 2, 4])
def test_a_node_joining_takes_about_one_share_and_only_for_itself(count: int) -> None:
    nodes = [f"node-{i}" for i in range(count)]
    before = assign(KEYS, nodes)
    after = assign(KEYS, [*nodes, "newcomer"])
    moved = sum(len(before[n] - after[n]) for n in nodes)
    assert moved == len(after["newcomer"])  # every moved key went to the newcomer
    for node in nodes:
        assert after[node] <= before[node]
    fair = len(KEYS) / (count + 1)
    assert 0.75 * fair <= moved <= 1.25 * fair


# ------------------------------------------------------------------ history across nodes


async def test_close_all_open_leaves_the_intervals_other_live_nodes_watch(
    pg_database: str,
) -> None:
    async with await Store.open(pg_database) as store:
        await pg_admin(pg_database.rsplit("/", 1)[1], "DELETE FROM status_intervals")
        await store.record_statuses(
            [("a", "web", "up", 10.0), ("b", "web", "down", 11.0), ("c", "web", "up", 12.0)]
        )
        store.kept_open = lambda: {("b", "web")}
        assert await store.close_all_open(20.0) == 2  # a start-up: all but b
        await store.record_statuses([("a", "web", "up", 21.0)])
        assert await store.close_all_open(30.0, [("a", "web"), ("b", "web")]) == 1  # a stop
        still_open = await store.open_status_intervals()
        assert [(i.customer, i.status, i.start) for i in still_open] == [("b", "down", 11.0)]
        # a node taking b over starts from its last recorded status, open or not
        assert await store.latest_statuses([("a", "web"), ("b", "web"), ("x", "web")]) == {
            ("a", "web"): ("up", 21.0),
            ("b", "web"): ("down", 11.0),
        }


# ------------------------------------------------------------------ leadership


class HangingStore:
    """A store whose lease renewals never answer (a cut connection, a hung query)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def acquire_leadership(self, node_id: str, lease_seconds: float) -> None:
        await asyncio.Event().wait()


async def test_a_leader_that_cannot_renew_steps_down_before_its_lease_runs_out(
    pg_database: str,
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM leader_lease")
        lost: list[tuple[int, float, float]] = []

        async def on_loss_check(epoch: int) -> None:
            lease, now = await store.leader_lease()
            assert lease is not None
            lost.append((epoch, lease.expires_at, now))

        checks: list[asyncio.Task[None]] = []
        gained: list[int] = []
        leadership = Leadership(
            store,
            "a",
            lease_seconds=1.5,
            on_gain=gained.append,
            on_loss=lambda epoch: checks.append(asyncio.create_task(on_loss_check(epoch))),
        )
        await leadership.renew()
        assert (leadership.is_leader, leadership.epoch, gained) == (True, 1, [1])
        leadership._store = HangingStore(store)  # type: ignore[assignment]
        renewing = asyncio.create_task(leadership.renew())
        await wait_until(lambda: not leadership.is_leader, 5.0, "the leader to step down")
        await asyncio.wait_for(asyncio.gather(*checks), 5.0)
        [(epoch, expires_at, db_time)] = lost
        assert epoch == 1
        assert db_time < expires_at, "stepped down only after the lease had already expired"
        await asyncio.wait_for(renewing, 5.0)  # the hung renewal gives up too
        # another node can take over only once the lease expired, in a new epoch
        assert await store.acquire_leadership("b", 1.5) is None
        await wait_until(lambda: _takes_over(store, "b"), 5.0, "b to take the expired lease over")
        lease, _ = await store.leader_lease()
        assert lease is not None and (lease.holder, lease.epoch) == ("b", 2)


async def _takes_over(store: Store, node: str) -> bool:
    return await store.acquire_leadership(node, 1.5) is not None


# ------------------------------------------------------------------ nodes on different configs


async def test_nodes_on_another_config_are_reported_and_do_not_share_targets(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    settings = ClusterSettings(node_id="x", heartbeat_interval=5.0, dead_after=20.0)
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM members", "DELETE FROM leader_lease")
        nodes = {
            name: ClusterNode(
                store,
                settings.model_copy(update={"node_id": name}),
                CollectorRegistry(),
                listen="127.0.0.1:1",
                version="1",
                started_at=1.0,
            )
            for name in ("a", "b", "c")
        }
        digests = {"a": "digest-1", "b": "digest-1", "c": "digest-2"}
        for name, node in nodes.items():
            node.config_digest = digests[name]
            await node.beat()
        for node in nodes.values():
            await node.beat()  # everyone has seen everyone
        keys = [f"customer-{i}/portal" for i in range(60)]
        assert nodes["a"].peers == nodes["b"].peers == ("a", "b")
        assert nodes["c"].peers == ("c",)  # alone on its config: it probes all of its own
        assert all(nodes["c"].owns(key) for key in keys)
        shares = nodes["a"].shares(keys)
        assert set(shares) == {"a", "b"} and all(shares.values())
        assert all(nodes["a"].owns(key) != nodes["b"].owns(key) for key in keys)
        for name, expected in (("a", 1), ("b", 1), ("c", 2)):
            registry = nodes[name].metrics.config_mismatch
            assert registry._value.get() == expected, name  # type: ignore[attr-defined]
        assert "event=cluster_config_mismatch node=a digest=digest-1 others=c:digest-2" in (
            caplog.text
        )
        leaders = [name for name, node in nodes.items() if node.leadership.is_leader]
        assert len(leaders) == 1
        for node in nodes.values():
            await node.close()
        assert (await store.members(20.0))[0] == []


# ------------------------------------------------------------------ fencing


async def test_a_fenced_store_writes_only_while_its_node_leads_in_its_epoch(
    pg_database: str,
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM leader_lease", "DELETE FROM status_intervals")
        lease = await store.acquire_leadership("a", 30.0)
        assert lease is not None
        async with await Store.open(pg_database, fence=("a", lease.epoch)) as leader_store:
            await leader_store.record_status("fenced", "web", "down", 10.0)
            # the lease runs out and b takes over: a's writes are refused, nothing written
            await pg_admin(database, "UPDATE leader_lease SET expires_at = expires_at - 60")
            with pytest.raises(Fenced, match="no longer leads in epoch"):
                await leader_store.record_status("fenced", "web", "up", 11.0)
            taken = await store.acquire_leadership("b", 30.0)
            assert taken is not None and taken.epoch == lease.epoch + 1
            with pytest.raises(Fenced):
                await leader_store.record_status("fenced", "web", "up", 12.0)
        history = await store.status_intervals(customer="fenced")
        assert [(i.status, i.end) for i in history] == [("down", None)]


async def test_a_takeover_waits_for_the_leaders_write_in_progress(pg_database: str) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM leader_lease")
        lease = await store.acquire_leadership("a", 1.0)
        assert lease is not None
        async with await Store.open(pg_database, fence=("a", lease.epoch)) as leader_store:
            async with leader_store.transaction() as tx:

                async def expired() -> bool:
                    current, now = await store.leader_lease()  # a read: never blocked
                    return current is not None and current.expires_at < now

                await wait_until(expired, 10.0, "a's lease to run out mid-write")
                takeover = asyncio.create_task(store.acquire_leadership("b", 30.0))
                await wait_until(
                    lambda: _waiting_on_a_lock(database), 10.0, "b to wait for a's write"
                )
                assert not takeover.done()
                await tx.record_status("fenced-2", "web", "down", 10.0)
            taken = await asyncio.wait_for(takeover, 10)
        assert taken is not None and (taken.holder, taken.epoch) == ("b", lease.epoch + 1)
        history = await store.status_intervals(customer="fenced-2")
        assert [i.status for i in history] == ["down"]  # a's write, begun in time, landed


async def _waiting_on_a_lock(database: str) -> bool:
    connection = await asyncpg.connect(f"{PG_SERVER}/{database}", timeout=10)
    try:
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND wait_event_type = 'Lock' AND query ILIKE '%leader_lease%'",
            database,
        )
    finally:
        await connection.close()
    return bool(waiting)


def test_a_short_link_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG.format(store="postgresql://postgres@127.0.0.1/x", cluster="{node_id: a}").replace(
            "link_key: test-link-signing-key", "link_key: short-secret"
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, env={})
    [issue] = caught.value.issues
    assert issue.path == "monitor.link_key" and "at least 16 bytes" in issue.message
    assert "short-secret" not in str(caught.value)


def test_the_shipped_cluster_config_is_valid_and_takes_its_secrets_from_the_environment() -> None:
    env = {
        "CSP_MONITOR_STORE": "postgresql://csp:secret@postgres:5432/csp_monitor",
        "CSP_MONITOR_AUDIT_KEY": "a" * 32,
        "CSP_MONITOR_LINK_KEY": "b" * 32,
        "CSP_MONITOR_ONCALL_TOKEN": "t" * 24,
        "CSP_MONITOR_NODE_ID": "csp-monitor-1",
        "CSP_MONITOR_ADVERTISE": "csp-monitor-1:9700",
    }
    path = Path(__file__).parent.parent / "deploy" / "cluster" / "config.yaml"
    monitor = load_catalog(path, env=env).config.monitor
    assert monitor.cluster is not None and monitor.cluster.node_id == "csp-monitor-1"
    with pytest.raises(ConfigError) as caught:  # without them: each one named
        load_catalog(path, env={})
    assert {"monitor.audit_key", "monitor.link_key", "monitor.store"} <= {
        issue.path for issue in caught.value.issues
    }


# ------------------------------------------------------------------ start-up


class FirstHeartbeatFails:
    """A store whose first heartbeat fails (PostgreSQL slow to answer a starting node)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failed = False

    async def heartbeat(self, node_id: str, **announced: object) -> float:
        if not self.failed:
            self.failed = True
            raise TimeoutError
        return await self.store.heartbeat(node_id, **announced)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


async def test_a_starting_node_that_misses_its_first_view_tries_again_before_scheduling(
    pg_database: str,
) -> None:
    # without a view it would believe itself alone and schedule every target
    database = pg_database.rsplit("/", 1)[1]
    settings = ClusterSettings(node_id="late", heartbeat_interval=0.1, dead_after=20.0)
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM members", "DELETE FROM leader_lease")
        await store.heartbeat("early", listen="x:1", started_at=1.0, version="1", config_digest="d")
        node = ClusterNode(
            FirstHeartbeatFails(store),  # type: ignore[arg-type]
            settings,
            CollectorRegistry(),
            listen="x:2",
            version="1",
            started_at=1.0,
        )
        await node.start("d")
        try:
            assert node.peers == ("early", "late")
        finally:
            await node.close()


async def test_a_node_takes_the_lease_only_once_allowed_to_lead(pg_database: str) -> None:
    # a start-up's busy loop could not renew a lease in time: it is taken once started
    database = pg_database.rsplit("/", 1)[1]
    settings = ClusterSettings(node_id="starting", heartbeat_interval=0.1, dead_after=20.0)
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM members", "DELETE FROM leader_lease")
        node = ClusterNode(
            store, settings, CollectorRegistry(), listen="x:1", version="1", started_at=1.0
        )
        await node.start("d", lead=False)
        try:
            for _ in range(3):
                await node.beat()
            assert not node.leadership.is_leader
            assert (await store.leader_lease())[0] is None
            node.allow_leading()
            await wait_until(lambda: node.leadership.is_leader, 10.0, "the lease taken")
        finally:
            await node.close()


class CountedViews:
    """A store that counts the member lists read (each a view of the cluster)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.views = 0

    async def members(self, dead_after: float) -> object:
        self.views += 1
        return await self.store.members(dead_after)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def starting_node(store: object, name: str, heartbeat: float) -> ClusterNode:
    return ClusterNode(
        store,  # type: ignore[arg-type]
        ClusterSettings(node_id=name, heartbeat_interval=heartbeat, dead_after=20.0),
        CollectorRegistry(),
        listen=f"{name}:1",
        version="1",
        started_at=time.time(),
    )


async def test_nodes_started_together_each_begin_with_their_own_share_not_everything(
    pg_database: str,
) -> None:
    # the first to look saw itself alone and scheduled every target, to give two thirds
    # back a heartbeat later; it looks again while the cluster is starting
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM members", "DELETE FROM leader_lease")
        first, second = starting_node(store, "a", 1.0), starting_node(store, "b", 1.0)
        starting = asyncio.create_task(first.start("d", lead=False))
        try:
            # the second starts once the first has seen itself alone
            await wait_until(lambda: first.view.members, 10.0, "the first node's first view")
            assert first.peers == ("a",)
            await second.start("d", lead=False)
            await starting
            assert first.peers == second.peers == ("a", "b")
        finally:
            await asyncio.gather(first.close(), second.close())


async def test_a_node_joining_a_running_cluster_schedules_after_one_view(
    pg_database: str,
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    async with await Store.open(pg_database) as store:
        await pg_admin(database, "DELETE FROM members", "DELETE FROM leader_lease")
        # running for a while: started long before dead_after
        await store.heartbeat("old", listen="x:1", started_at=1.0, version="1", config_digest="d")
        counted = CountedViews(store)
        node = starting_node(counted, "new", 1.0)
        await node.start("d", lead=False)
        try:
            assert node.peers == ("new", "old")
            assert counted.views == 1
        finally:
            await node.close()
