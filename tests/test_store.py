"""The store against real databases: SQLite in a temporary directory and PostgreSQL on
127.0.0.1:5432 (a throwaway database for this module). Every test runs on both."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from monitor.engine.model import (
    EscalationStep,
    Incident,
    IncidentEvent,
    IncidentState,
    MaintenanceWindow,
    OnCallPick,
    PolicySnapshot,
    Severity,
    StatusInterval,
)
from monitor.engine.oncall import Override
from monitor.notify.message import DeliveryReceipt, RenderedMessage
from monitor.store import (
    MIGRATIONS,
    IncidentAlreadyOpen,
    IncidentChanged,
    IncidentNotFound,
    Migration,
    OutboxStatus,
    SchemaTooNew,
    Store,
    StoreError,
    latest_version,
    message_from_json,
    message_to_json,
    schema,
)
from monitor.store.connect import async_url
from tests.conftest import pg_admin, run_elsewhere, wait_until

REPO = Path(__file__).resolve().parent.parent
T0 = 1795000000.0  # 2026-11-18 11:06:40 UTC
T = TypeVar("T")

POLICY = PolicySnapshot(
    name="gold",
    steps=(
        EscalationStep(0, ("oncall-sms", "noc-email")),
        EscalationStep(900, ("noc-lead-sms",)),
        EscalationStep(3600, ("vendor-desk-email",), action="vendor_ticket"),
    ),
    repeat_interval=1800,
    ack_timeout=3600,
    escalate_after=1200,
)


# --------------------------------------------------------------------------- databases


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file (its directory not yet made) or an emptied
    PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/monitor.db"
    url: str = request.getfixturevalue("pg_database")
    run_elsewhere(
        pg_admin(url.rsplit("/", 1)[1], "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    )
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


# --------------------------------------------------------------------------- helpers


def new_incident(
    customer: str = "contoso", service: str = "exchange-online", at: float = T0, **changes: Any
) -> Incident:
    incident = Incident(
        id="",
        customer=customer,
        service=service,
        status="down",
        severity=Severity.MAJOR,
        state=IncidentState.OPEN,
        opened_at=at,
        policy=POLICY,
        reason="owa: HTTP 503 from partner.outlook.cn",
        next_escalation_at=at + 900,
        updated_at=at,
    )
    return dataclasses.replace(incident, **changes)


def message(
    key: str, channel: str = "oncall-sms", incident_id: str | None = None
) -> RenderedMessage:
    return RenderedMessage(
        dedup_key=key,
        channel=channel,
        event="opened",
        recipients=("+8613800000000",),
        subject="[MAJOR] contoso exchange-online down",
        text="Exchange Online is down for Contoso since 11:06 UTC.",
        html="<p>Exchange Online is <b>down</b></p>",
        sms="【NOC】Contoso Exchange Online 服务中断 11:06 UTC",
        payload={"customer": "contoso", "blast_radius": ["contoso", "fabrikam"]},
        incident_id=incident_id,
    )


async def open_with_pages(
    store: Store, incident: Incident, pages: list[RenderedMessage]
) -> Incident:
    """What the daemon does with an "open" decision: incident, timeline and pages at once."""
    async with store.transaction() as tx:
        opened = await tx.open_incident(incident)
        await tx.add_events([IncidentEvent(opened.id, opened.opened_at, "opened")])
        await tx.enqueue(
            [dataclasses.replace(m, incident_id=opened.id) for m in pages], opened.opened_at
        )
    return opened


# --------------------------------------------------------------------------- opening


def test_user_facing_urls_map_to_async_drivers(tmp_path: Path) -> None:
    db = tmp_path / "monitor.db"
    assert async_url(str(db)).render_as_string() == f"sqlite+aiosqlite:///{db}"
    assert async_url(db).drivername == "sqlite+aiosqlite"
    assert async_url(f"sqlite:///{db}").render_as_string() == f"sqlite+aiosqlite:///{db}"
    pg = async_url("postgresql://noc@db.example.cn:5433/monitor")
    assert pg.render_as_string() == "postgresql+asyncpg://noc@db.example.cn:5433/monitor"
    assert async_url("postgres://noc@db/monitor").drivername == "postgresql+asyncpg"
    with pytest.raises(StoreError, match="unsupported database URL mysql://noc:\\*\\*\\*@db/m"):
        async_url("mysql://noc:hunter2@db/m")
    with pytest.raises(StoreError, match="needs a file"):
        async_url("sqlite:///:memory:")


async def test_sqlite_is_created_with_its_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "sub" / "monitor.db"
    store = await Store.open(path)
    await store.close()
    assert path.exists()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_an_unreachable_postgresql_is_a_clear_error_without_the_password(
    free_port: int,
) -> None:
    with pytest.raises(StoreError) as caught:
        await Store.open(f"postgresql://noc:hunter2@127.0.0.1:{free_port}/monitor")
    assert f"cannot open the store at postgresql+asyncpg://noc:***@127.0.0.1:{free_port}" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)


async def test_opening_again_is_a_no_op(store_url: str) -> None:
    for _ in range(2):
        async with await Store.open(store_url) as store:
            assert await store.version() == latest_version()
    async with await Store.open(store_url) as store, store.transaction() as tx:
        rows = await tx._conn.exec_driver_sql("SELECT version FROM schema_version")
        assert rows.all() == [(v,) for v in range(1, latest_version() + 1)]


async def test_a_version_1_database_is_upgraded_with_the_audit_log(store_url: str) -> None:
    async with await Store.open(store_url, migrations=MIGRATIONS[:1]) as store:
        assert await store.version() == 1
    async with await Store.open(store_url, audit_key=b"k" * 32) as store:
        assert await store.version() == latest_version()
        await store.audit(T0, "config", "config.yaml", None, digest="abc")
        assert (await store.audit_head())[0] == 1


async def test_a_database_from_a_newer_version_is_refused(store_url: str) -> None:
    async with await Store.open(store_url) as store, store.transaction() as tx:
        await tx._conn.exec_driver_sql(
            "INSERT INTO schema_version (version, description, applied_at) "
            "VALUES (99, 'from the future', 0)"
        )
    with pytest.raises(
        SchemaTooNew,
        match="schema version 99, but this csp-monitor only knows "
        f"versions up to {latest_version()}: upgrade csp-monitor",
    ):
        await Store.open(store_url)


async def test_pending_steps_are_applied_once_in_order(store_url: str) -> None:
    applied: list[int] = []

    step = latest_version() + 1

    def add_notes(connection: Any) -> None:
        applied.append(step)
        connection.exec_driver_sql("CREATE TABLE operator_notes (id INTEGER PRIMARY KEY)")

    newer = (*MIGRATIONS, Migration(step, "operator notes", add_notes))
    async with await Store.open(store_url):
        pass
    for _ in range(2):
        async with await Store.open(store_url, migrations=newer) as store:
            assert await store.version() == step
    assert applied == [step]
    with pytest.raises(SchemaTooNew):  # the older code must not write to it any more
        await Store.open(store_url)


# --------------------------------------------------------------------------- incidents


async def test_incident_round_trip_keeps_every_field(store: Store) -> None:
    incident = new_incident(
        status="degraded",
        severity=Severity.CRITICAL,
        escalation_level=2,
        next_reminder_at=T0 + 1800,
        acknowledged_at=T0 + 300,
        acknowledged_by="li.wei",
        state=IncidentState.ACKNOWLEDGED,
        recovering_since=T0 + 400.5,
        flapping=True,
        muted=True,
        notified=True,
        vendor_case="21V-2026-118-0042",
        vendor_group="VG-exchange-online-1",
    )
    async with store.transaction() as tx:
        opened = await tx.open_incident(incident)
    assert opened.id == "INC-20261118-0001"
    assert await store.get_incident(opened.id) == dataclasses.replace(incident, id=opened.id)
    assert await store.get_incident("INC-20261118-0999") is None


async def test_policy_snapshot_keeps_step_recipients(store: Store) -> None:
    policy = PolicySnapshot("vip", (EscalationStep(0, ("oncall-sms",), None, ("+8613900000000",)),))
    async with store.transaction() as tx:
        opened = await tx.open_incident(new_incident(policy=policy))
    stored = await store.get_incident(opened.id)
    assert stored is not None
    assert stored.policy == policy


async def test_ids_count_per_utc_day(store: Store) -> None:
    late = T0 + 12.5 * 3600  # 23:36 UTC, already the 19th in Beijing: still numbered the 18th
    ids = [
        (await open_with_pages(store, new_incident(customer=c, at=at), [])).id
        for c, at in [
            ("contoso", T0),
            ("fabrikam", T0 + 60),
            ("tailspin", late),
            ("northwind", T0 + 86400),
        ]
    ]
    assert ids == [
        "INC-20261118-0001",
        "INC-20261118-0002",
        "INC-20261118-0003",
        "INC-20261119-0001",
    ]


async def test_a_second_open_incident_for_a_subscription_is_refused(store: Store) -> None:
    first = await open_with_pages(store, new_incident(), [message("first")])
    with pytest.raises(IncidentAlreadyOpen) as caught:
        await open_with_pages(store, new_incident(at=T0 + 30), [message("second")])
    assert caught.value.existing_id == first.id
    assert [i.id for i in await store.open_incidents()] == [first.id]
    assert [row.dedup_key for row in await store.list_outbox()] == ["first"]
    # another service of the same customer is another subscription
    other = await open_with_pages(store, new_incident(service="sharepoint-online"), [])
    assert other.id == "INC-20261118-0002"  # the refused attempt gave its number back


async def test_the_refusal_leaves_the_transaction_usable(store: Store) -> None:
    first = await open_with_pages(store, new_incident(), [])
    async with store.transaction() as tx:
        with pytest.raises(IncidentAlreadyOpen):
            await tx.open_incident(new_incident(at=T0 + 30))
        await tx.add_events([IncidentEvent(first.id, T0 + 30, "note", {"text": "still down"})])
    assert [e.kind for e in await store.events(first.id)] == ["opened", "note"]


async def test_after_resolving_a_new_incident_can_open(store: Store) -> None:
    first = await open_with_pages(store, new_incident(), [])
    async with store.transaction() as tx:
        resolved = dataclasses.replace(
            first, state=IncidentState.RESOLVED, resolved_at=T0 + 600, updated_at=T0 + 600
        )
        await tx.save_incident(resolved, expected_updated_at=first.updated_at)
    second = await open_with_pages(store, new_incident(at=T0 + 3600), [])
    assert second.id == "INC-20261118-0002"
    assert [i.id for i in await store.open_incidents()] == [second.id]
    with pytest.raises(IncidentAlreadyOpen):  # reopening the first would make two open
        async with store.transaction() as tx:
            await tx.save_incident(dataclasses.replace(resolved, state=IncidentState.OPEN))


async def test_saving_an_incident_changed_by_someone_else_is_refused(store: Store) -> None:
    opened = await open_with_pages(store, new_incident(), [])
    acked = dataclasses.replace(
        opened,
        state=IncidentState.ACKNOWLEDGED,
        acknowledged_at=T0 + 120,
        acknowledged_by="li.wei",
        next_escalation_at=None,
        updated_at=T0 + 120,
    )
    async with store.transaction() as tx:
        await tx.save_incident(acked, expected_updated_at=opened.updated_at)
        await tx.add_events([IncidentEvent(opened.id, T0 + 120, "acknowledged", actor="li.wei")])
    stale = dataclasses.replace(opened, escalation_level=1, updated_at=T0 + 900)
    with pytest.raises(IncidentChanged):
        async with store.transaction() as tx:
            await tx.save_incident(stale, expected_updated_at=opened.updated_at)
    assert await store.get_incident(opened.id) == acked
    with pytest.raises(IncidentNotFound):
        async with store.transaction() as tx:
            await tx.save_incident(dataclasses.replace(acked, id="INC-20261118-0404"))


async def test_list_incidents_by_subscription_and_period(store: Store) -> None:
    a = await open_with_pages(store, new_incident("contoso", at=T0), [])
    async with store.transaction() as tx:
        await tx.save_incident(
            dataclasses.replace(a, state=IncidentState.RESOLVED, resolved_at=T0 + 600)
        )
    b = await open_with_pages(store, new_incident("contoso", at=T0 + 7200), [])
    c = await open_with_pages(store, new_incident("fabrikam", "azure-portal", at=T0 + 100), [])
    assert [i.id for i in await store.list_incidents()] == [b.id, c.id, a.id]
    assert [i.id for i in await store.list_incidents(customer="contoso")] == [b.id, a.id]
    assert [i.id for i in await store.list_incidents(service="azure-portal")] == [c.id]
    assert [i.id for i in await store.list_incidents(since=T0 + 700)] == [b.id, c.id]
    assert [i.id for i in await store.list_incidents(until=T0 + 100)] == [a.id]
    assert [i.id for i in await store.list_incidents(limit=1)] == [b.id]


async def test_timeline_is_in_time_order(store: Store) -> None:
    opened = await open_with_pages(store, new_incident(), [])
    async with store.transaction() as tx:
        await tx.add_events(
            [
                IncidentEvent(opened.id, T0 + 900, "escalated", {"level": 2}),
                IncidentEvent(
                    opened.id,
                    T0 + 60,
                    "note",
                    {"text": "vendor says: investigating"},
                    actor="li.wei",
                ),
                IncidentEvent(opened.id, T0 + 900, "reminder"),  # same time: recording order
            ]
        )
    timeline = await store.events(opened.id)
    assert [(e.at - T0, e.kind) for e in timeline] == [
        (0, "opened"),
        (60, "note"),
        (900, "escalated"),
        (900, "reminder"),
    ]
    assert timeline[1].detail == {"text": "vendor says: investigating"}
    assert timeline[1].actor == "li.wei"


# --------------------------------------------------------------------------- concurrency


async def test_two_daemons_racing_to_open_get_one_incident(store_url: str) -> None:
    daemons = [await Store.open(store_url), await Store.open(store_url)]
    try:
        outcomes = await asyncio.gather(
            *(
                open_with_pages(d, new_incident(), [message(f"daemon-{n}")])
                for n, d in enumerate(daemons)
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, Incident)]
        losers = [o for o in outcomes if isinstance(o, IncidentAlreadyOpen)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1, outcomes
        assert losers[0].existing_id == winners[0].id
        assert [i.id for i in await daemons[0].open_incidents()] == [winners[0].id]
        pages = await daemons[0].list_outbox()
        assert [p.message.incident_id for p in pages] == [winners[0].id]  # loser queued nothing
        assert len(await daemons[0].events(winners[0].id)) == 1
    finally:
        for daemon in daemons:
            await daemon.close()


async def test_an_open_waiting_on_an_uncommitted_one_loses_on_postgresql(
    pg_database: str,
) -> None:
    """The hard interleaving: B inserts while A's insert is not yet committed. Fixed ids,
    so only the partial unique index (not the id counter) stands between them."""
    run_elsewhere(
        pg_admin(
            pg_database.rsplit("/", 1)[1], "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"
        )
    )
    first, second = await Store.open(pg_database), await Store.open(pg_database)
    watcher = await asyncpg.connect(pg_database)
    try:
        async with first.transaction() as tx:
            await tx.open_incident(new_incident(id="INC-A"))
            racer = asyncio.create_task(open_with_pages(second, new_incident(id="INC-B"), []))

            async def racer_waits() -> bool:
                if racer.done():  # it did not wait: let `await racer` below say why
                    return True
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                return bool(waiting)

            await wait_until(racer_waits, what="the second insert to wait for the first")
        with pytest.raises(IncidentAlreadyOpen) as caught:
            await racer
        assert caught.value.existing_id == "INC-A"
    finally:
        await watcher.close()
        await first.close()
        await second.close()


async def test_a_crash_before_commit_leaves_nothing(store_url: str, store: Store) -> None:
    """kill -9 in the middle of persisting a decision: neither incident nor pages remain."""
    # Self-contained (no pytest import) so the child starts fast.
    script = (
        "import asyncio, sys\n"
        "from monitor.engine.model import Incident, IncidentEvent, IncidentState, Severity\n"
        "from monitor.engine.model import PolicySnapshot\n"
        "from monitor.notify.message import RenderedMessage\n"
        "from monitor.store import Store\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    async with store.transaction() as tx:\n"
        "        opened = await tx.open_incident(Incident('', 'contoso', 'exchange-online',\n"
        "            'down', Severity.MAJOR, IncidentState.OPEN, 1795000000.0,\n"
        "            PolicySnapshot('gold', ())))\n"
        "        await tx.add_events([IncidentEvent(opened.id, opened.opened_at, 'opened')])\n"
        "        page = RenderedMessage('page', 'oncall-sms', 'opened', (), 'down', 'down')\n"
        "        await tx.enqueue([page], opened.opened_at)\n"
        "        await tx.record_status('contoso', 'exchange-online', 'down', opened.opened_at)\n"
        "        print('written', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, store_url, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"written\n"  # type: ignore[union-attr]
    finally:
        process.kill()
        await process.wait()
    assert await store.list_incidents() == []
    assert await store.list_outbox() == []
    assert await store.status_intervals() == []
    # the dead writer's locks are gone: the same decision can be persisted now
    assert (await open_with_pages(store, new_incident(), [message("page")])).id == (
        "INC-20261118-0001"
    )


async def test_a_transaction_that_raises_leaves_nothing_behind(store: Store) -> None:
    window = MaintenanceWindow("MW-1", T0, T0 + 3600, customer="contoso")
    with pytest.raises(RuntimeError, match="template error"):
        async with store.transaction() as tx:
            opened = await tx.open_incident(new_incident())
            await tx.add_events([IncidentEvent(opened.id, T0, "opened")])
            await tx.enqueue([message("page", incident_id=opened.id)], T0)
            await tx.record_status("contoso", "exchange-online", "down", T0)
            await tx.add_maintenance(window, T0)
            await tx.beat("noc-1", T0, T0)
            raise RuntimeError("template error")
    assert await store.list_incidents() == []
    assert await store.list_outbox() == []
    assert await store.status_intervals() == []
    assert await store.list_maintenance() == []
    assert await store.last_seen() is None
    assert (await open_with_pages(store, new_incident(), [])).id == "INC-20261118-0001"


async def test_a_restarted_store_sees_the_same_data(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        opened = await open_with_pages(store, new_incident(), [message("page")])
        await store.record_status("contoso", "exchange-online", "down", T0)
        window = await store.add_maintenance(MaintenanceWindow("", T0, T0 + 3600), T0)
        await store.beat("noc-1", T0 - 600, T0)
    async with await Store.open(store_url) as store:
        assert await store.open_incidents() == [opened]
        assert [e.kind for e in await store.events(opened.id)] == ["opened"]
        assert [r.dedup_key for r in await store.list_outbox(OutboxStatus.PENDING)] == ["page"]
        assert await store.open_status_intervals() == [
            StatusInterval("contoso", "exchange-online", "down", T0)
        ]
        assert await store.list_maintenance() == [window]
        assert await store.last_seen("noc-1") == T0


# --------------------------------------------------------------------------- status history


async def test_status_intervals_open_close_and_ignore_repeats(store: Store) -> None:
    assert await store.record_status("contoso", "exchange-online", "up", T0) is True
    assert await store.record_status("contoso", "exchange-online", "up", T0 + 60) is False
    assert await store.record_status("contoso", "exchange-online", "down", T0 + 120) is True
    assert await store.record_status("fabrikam", "exchange-online", "up", T0) is True
    # the wall clock stepped back 5 s (NTP): no interval of negative length
    assert await store.record_status("contoso", "exchange-online", "up", T0 + 115) is True
    assert await store.status_intervals("contoso") == [
        StatusInterval("contoso", "exchange-online", "up", T0, T0 + 120),
        StatusInterval("contoso", "exchange-online", "down", T0 + 120, T0 + 120),
        StatusInterval("contoso", "exchange-online", "up", T0 + 120, None),
    ]
    assert [(i.customer, i.status) for i in await store.open_status_intervals()] == [
        ("contoso", "up"),
        ("fabrikam", "up"),
    ]


async def test_a_batch_of_status_changes_is_written_as_one_by_one(
    store_url: str, tmp_path: Path
) -> None:
    """The same intervals and the same audit chain, hash for hash, as record_status."""
    key = b"k" * 32
    changes = [
        ("contoso", "exchange-online", "unknown", T0),
        ("contoso", "exchange-online", "up", T0 + 30),
        ("fabrikam", "exchange-online", "down", T0 + 31),
        ("contoso", "exchange-online", "up", T0 + 40),  # unchanged: nothing
        ("contoso", "exchange-online", "down", T0 + 60),
        ("contoso", "exchange-online", "up", T0 + 55),  # the clock stepped back
        ("fabrikam", "exchange-online", "up", T0 + 90),
    ]
    earlier = [("contoso", "exchange-online", "up", T0 - 600)]  # stored before the batch
    one_by_one = await Store.open(f"sqlite:///{tmp_path}/one-by-one.db", audit_key=key)
    batched = await Store.open(store_url, audit_key=key)
    try:
        for change in earlier + changes:
            await one_by_one.record_status(*change)
        assert await batched.record_statuses(earlier) == 1
        assert await batched.record_statuses(changes) == 6

        expected = await one_by_one.status_intervals()
        assert await batched.status_intervals() == expected
        assert [(i.status, i.start - T0, i.end) for i in expected if i.customer == "contoso"] == [
            ("up", -600, T0),
            ("unknown", 0, T0 + 30),
            ("up", 30, T0 + 60),
            ("down", 60, T0 + 60),
            ("up", 60, None),
        ]
        assert await batched.audit_entries() == await one_by_one.audit_entries()
        assert (await batched.verify_audit(key))[1] == []
    finally:
        await one_by_one.close()
        await batched.close()


async def test_a_start_ups_batch_of_first_statuses_is_written_whole(store_url: str) -> None:
    """12,000 first statuses, then 12,000 changes of them, each in one call: more keys, rows
    and audit entries than one statement takes, on both databases; every interval and
    audit entry is there once, the chain whole."""
    key, count = b"k" * 32, 12_000
    store = await Store.open(store_url, audit_key=key)
    try:
        up = [(f"c{i:05d}", "web", "up", T0 + i / 1000) for i in range(count)]
        assert await store.record_statuses(up) == count
        down = [(f"c{i:05d}", "web", "down", T0 + 60 + i / 1000) for i in range(count)]
        assert await store.record_statuses(down) == count

        intervals = await store.status_intervals()
        assert len(intervals) == 2 * count
        last, went_up, went_down = f"c{count - 1:05d}", up[-1][3], down[-1][3]
        assert intervals[-2:] == [
            StatusInterval(last, "web", "up", went_up, went_down),
            StatusInterval(last, "web", "down", went_down, None),
        ]
        entries = await store.audit_entries(limit=3 * count)
        assert [e.seq for e in entries] == list(range(1, 2 * count + 1))
        assert (await store.verify_audit(key))[1] == []
    finally:
        await store.close()


async def test_status_intervals_in_a_period(store: Store) -> None:
    for at, status in [(T0, "up"), (T0 + 100, "down"), (T0 + 200, "up")]:
        await store.record_status("contoso", "exchange-online", status, at)
    assert [i.status for i in await store.status_intervals(start=T0 + 150)] == ["down", "up"]
    assert [i.status for i in await store.status_intervals(end=T0 + 100)] == ["up"]
    assert [i.status for i in await store.status_intervals(start=T0 + 100, end=T0 + 200)] == [
        "down"
    ]
    assert await store.status_intervals(service="azure-portal") == []


async def test_the_period_read_one_subscription_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SLA metric's read: the same intervals as the whole read, grouped by subscription,
    even when a subscription's rows span two of the cursor's batches."""
    from monitor.store import reads

    monkeypatch.setattr(reads, "_ROWS_PER_TURN", 2)  # batches of two rows: groups span them
    history = [
        ("contoso", "exchange-online", [(T0, "up"), (T0 + 100, "down"), (T0 + 200, "up")]),
        ("contoso", "azure-portal", [(T0 + 10, "up")]),
        ("fabrikam", "exchange-online", [(T0 - 500, "down"), (T0 + 50, "up")]),
        ("tailspin", "azure-portal", [(T0 - 900, "up"), (T0 - 800, "down")]),
    ]
    for customer, service, changes in history:
        for at, status in changes:
            await store.record_status(customer, service, status, at)
    expected: dict[tuple[str, str], list[StatusInterval]] = {}
    for interval in await store.status_intervals(start=T0 - 100, end=T0 + 150):
        expected.setdefault((interval.customer, interval.service), []).append(interval)
    grouped = [item async for item in store.intervals_by_subscription(T0 - 100, T0 + 150)]
    assert [key for key, _ in grouped] == [
        ("contoso", "azure-portal"),
        ("contoso", "exchange-online"),
        ("fabrikam", "exchange-online"),
        ("tailspin", "azure-portal"),  # down since before the period: still open
    ]
    assert dict(grouped) == expected
    assert [i.status for i in dict(grouped)[("contoso", "exchange-online")]] == ["up", "down"]

    # only some subscriptions (the SLA metric's early run), named two to a read: not their
    # customers' other subscriptions, nor a subscription named but without history
    monkeypatch.setattr(reads, "_KEYS_PER_READ", 2)
    wanted = [
        ("tailspin", "azure-portal"),
        ("contoso", "exchange-online"),
        ("fabrikam", "exchange-online"),
        ("nobody", "exchange-online"),
    ]
    some = [item async for item in store.intervals_by_subscription(T0 - 100, T0 + 150, wanted)]
    assert dict(some) == {key: expected[key] for key in wanted if key in expected}
    assert len(some) == 3
    # contoso's and azure-portal's rows are read together: contoso/azure-portal is not asked
    pair = [("contoso", "exchange-online"), ("tailspin", "azure-portal")]
    some = [item async for item in store.intervals_by_subscription(T0 - 100, T0 + 150, pair)]
    assert dict(some) == {key: expected[key] for key in pair}


async def test_close_all_open_ends_the_current_intervals(store: Store) -> None:
    await store.record_status("contoso", "exchange-online", "up", T0)
    await store.record_status("fabrikam", "exchange-online", "down", T0)
    await store.record_status("tailspin", "azure-portal", "up", T0)
    await store.record_status("fabrikam", "azure-portal", "up", T0)  # its customer's and
    # its service's other subscriptions are named, itself not: it stays open
    closed = await store.close_all_open(
        T0 + 60,
        [
            ("contoso", "exchange-online"),
            ("fabrikam", "exchange-online"),
            ("tailspin", "azure-portal"),
        ],
    )
    assert closed == 3
    assert [(i.customer, i.service, i.end) for i in await store.status_intervals()] == [
        ("contoso", "exchange-online", T0 + 60),
        ("fabrikam", "azure-portal", None),
        ("fabrikam", "exchange-online", T0 + 60),
        ("tailspin", "azure-portal", T0 + 60),
    ]
    assert await store.close_all_open(T0 + 120) == 1
    assert await store.open_status_intervals() == []


async def test_heartbeats_show_runs_and_the_gap_between_them(store: Store) -> None:
    assert await store.last_seen() is None
    await store.beat("noc-1", T0, T0)
    await store.beat("noc-1", T0, T0 + 30)  # then kill -9
    await store.beat("noc-1", T0 + 300, T0 + 300)  # the restart
    await store.beat("noc-2", T0 + 10, T0 + 40)
    assert await store.last_seen("noc-1") == T0 + 300
    assert await store.last_seen("noc-2") == T0 + 40
    assert await store.last_seen() == T0 + 300
    runs = await store.monitor_runs()
    assert [(r.instance_id, r.started_at - T0, r.last_beat_at - T0) for r in runs] == [
        ("noc-1", 0, 30),
        ("noc-2", 10, 40),
        ("noc-1", 300, 300),
    ]
    assert [r.started_at for r in await store.monitor_runs(since=T0 + 35)] == [T0 + 10, T0 + 300]


# --------------------------------------------------------------------------- outbox


async def test_enqueue_skips_dedup_keys_already_queued(store: Store) -> None:
    first = [
        message("INC-1/opened/0/oncall-sms"),
        message("INC-1/opened/0/noc-email", "noc-email"),
        message("INC-1/opened/0/oncall-sms"),
    ]  # a duplicate within one batch
    assert await store.enqueue(first, T0) == 2
    assert (
        await store.enqueue(
            [message("INC-1/opened/0/oncall-sms"), message("INC-1/escalated/1/noc-lead-sms")],
            T0 + 900,
        )
        == 1
    )
    assert await store.enqueue([], T0) == 0
    rows = await store.list_outbox()
    assert [(r.dedup_key, r.status, r.attempts) for r in rows] == [
        ("INC-1/opened/0/oncall-sms", OutboxStatus.PENDING, 0),
        ("INC-1/opened/0/noc-email", OutboxStatus.PENDING, 0),
        ("INC-1/escalated/1/noc-lead-sms", OutboxStatus.PENDING, 0),
    ]
    assert rows[0].message == message("INC-1/opened/0/oncall-sms")  # every field kept


def test_messages_round_trip_through_json() -> None:
    original = message("k", incident_id="INC-20261118-0001")
    assert message_from_json(message_to_json(original)) == original
    bare = RenderedMessage("k2", "file", "resolved", (), "subject", "text")
    assert message_from_json(message_to_json(bare)) == bare


async def test_claim_leases_due_messages_once(store: Store) -> None:
    await store.enqueue([message("a"), message("b"), message("c", "noc-email")], T0)
    await store.enqueue([message("later")], T0 + 600)
    claimed = await store.claim_due(T0 + 1, limit=2, lease_seconds=120)
    assert [(r.dedup_key, r.status, r.attempts) for r in claimed] == [
        ("a", OutboxStatus.SENDING, 1),
        ("b", OutboxStatus.SENDING, 1),
    ]
    assert [r.dedup_key for r in await store.claim_due(T0 + 2, 10, 120)] == ["c"]
    assert await store.claim_due(T0 + 60, 10, 120) == []  # leased, and "later" not due
    # the sender died: leases run out and the messages are due again, here for one channel
    assert [
        r.dedup_key for r in await store.claim_due(T0 + 600, 10, 120, channels=["noc-email"])
    ] == ["c"]
    again = await store.claim_due(T0 + 601, 10, 120)
    assert [(r.dedup_key, r.attempts) for r in again] == [("a", 2), ("b", 2), ("later", 1)]


async def test_two_daemons_claiming_at_once_get_disjoint_messages(store_url: str) -> None:
    daemons = [await Store.open(store_url), await Store.open(store_url)]
    try:
        await daemons[0].enqueue([message(f"m{n}") for n in range(40)], T0)
        batches = await asyncio.gather(
            *(d.claim_due(T0 + 1, 25, 120) for d in daemons for _ in range(2))
        )
        keys = [row.dedup_key for batch in batches for row in batch]
        assert sorted(keys) == sorted(f"m{n}" for n in range(40))  # each exactly once
    finally:
        for daemon in daemons:
            await daemon.close()


async def test_retry_failure_and_receipts(store: Store) -> None:
    await store.enqueue(
        [message("sms"), message("mail", "noc-email"), message("hook", "webhook")], T0
    )
    sms, mail, hook = await store.claim_due(T0, 10, 120)
    assert await store.mark_retry(sms.id, "HTTP 503 from gateway", T0 + 30) is True
    assert (
        await store.mark_sent(
            mail.id, DeliveryReceipt("<250 2.0.0 queued as 4XyZ>", "smtp.example.cn"), T0 + 1
        )
        is True
    )
    assert await store.mark_failed(hook.id, "HTTP 404: no such hook", T0 + 1) is True
    assert await store.claim_due(T0 + 29, 10, 120) == []  # retry not due yet
    (retried,) = await store.claim_due(T0 + 30, 10, 120)
    assert (retried.dedup_key, retried.attempts, retried.last_error) == (
        "sms",
        2,
        "HTTP 503 from gateway",
    )
    assert await store.mark_sent(retried.id, DeliveryReceipt("SM123"), T0 + 31) is True
    # late answers must not undo an outcome
    assert await store.mark_sent(retried.id, DeliveryReceipt("SM999"), T0 + 32) is False
    assert await store.mark_retry(mail.id, "timeout", T0 + 60) is False
    assert await store.mark_failed(mail.id, "timeout", T0 + 60) is False
    rows = {r.dedup_key: r for r in await store.list_outbox()}
    assert (rows["sms"].status, rows["sms"].receipt_id, rows["sms"].sent_at) == (
        OutboxStatus.SENT,
        "SM123",
        T0 + 31,
    )
    assert (rows["mail"].receipt_id, rows["mail"].receipt_detail) == (
        "<250 2.0.0 queued as 4XyZ>",
        "smtp.example.cn",
    )
    assert (rows["hook"].status, rows["hook"].last_error, rows["hook"].failed_at) == (
        OutboxStatus.FAILED,
        "HTTP 404: no such hook",
        T0 + 1,
    )
    assert await store.claim_due(T0 + 10_000, 10, 120) == []  # nothing left to send
    assert await store.outbox_stats() == {
        ("oncall-sms", OutboxStatus.SENT): 1,
        ("noc-email", OutboxStatus.SENT): 1,
        ("webhook", OutboxStatus.FAILED): 1,
    }


async def test_outbox_rows_by_incident(store: Store) -> None:
    opened = await open_with_pages(store, new_incident(), [message("p1"), message("p2")])
    await store.enqueue([message("report", "noc-email")], T0)
    assert [r.dedup_key for r in await store.list_outbox(incident_id=opened.id)] == ["p1", "p2"]
    assert [r.dedup_key for r in await store.list_outbox(limit=1)] == ["p1"]


# --------------------------------------------------------------------------- maintenance


async def test_maintenance_windows_add_list_delete(store: Store) -> None:
    weekly = MaintenanceWindow(
        "MW-sat",
        T0 + 3600,
        T0 + 7200,
        customer="contoso",
        service="exchange-online",
        recurrence="weekly",
        reason="Exchange patching",
        created_by="li.wei",
    )
    made_up = await store.add_maintenance(MaintenanceWindow("", T0, T0 + 600), T0)
    assert made_up.id.startswith("MW-")
    assert await store.add_maintenance(weekly, T0) == weekly
    assert await store.list_maintenance() == [made_up, weekly]
    with pytest.raises(StoreError, match="MW-sat exists already"):
        await store.add_maintenance(weekly, T0)
    with pytest.raises(ValueError, match="end after it starts"):
        await store.add_maintenance(MaintenanceWindow("MW-x", T0, T0), T0)
    assert await store.delete_maintenance("MW-sat") is True
    assert await store.delete_maintenance("MW-sat") is False
    assert await store.list_maintenance() == [made_up]


def page(key: str, event: str, person: str, channel: str = "oncall-sms") -> RenderedMessage:
    return dataclasses.replace(
        message(key, channel, "INC-1"), event=event, recipients=(person,) if person else ()
    )


async def test_an_incidents_messages_to_one_recipient_are_claimed_in_queue_order(
    store: Store,
) -> None:
    await store.enqueue(
        [page("open-a", "opened", "+8613800000001"), page("open-b", "opened", "+8613800000002")],
        T0,
    )
    await store.enqueue(
        [
            page("resolved-a", "resolved", "+8613800000001"),
            page("resolved-b", "resolved", "+8613800000002"),
            page("resolved-mail", "resolved", "", channel="noc-email"),
        ],
        T0 + 5,
    )
    first = await store.claim_due(T0 + 6, 10, 120)
    # each "resolved" waits for its recipient's "opened"; the e-mail had no earlier message
    assert [r.dedup_key for r in first] == ["open-a", "open-b", "resolved-mail"]
    open_a, open_b, _ = first
    await store.mark_retry(open_a.id, "HTTP 503 from gateway", T0 + 60)
    await store.mark_sent(open_b.id, DeliveryReceipt("SM2"), T0 + 7)
    assert [r.dedup_key for r in await store.claim_due(T0 + 8, 10, 120)] == ["resolved-b"]
    assert await store.claim_due(T0 + 30, 10, 120) == []  # open-a is still being retried
    [retried] = await store.claim_due(T0 + 60, 10, 120)
    assert retried.dedup_key == "open-a"
    await store.mark_failed(retried.id, "HTTP 503 from gateway", T0 + 61)
    [resolved_a] = await store.claim_due(T0 + 62, 10, 120)
    assert resolved_a.dedup_key == "resolved-a"
    assert [r.dedup_key for r in await store.failed_before(resolved_a)] == ["open-a"]
    assert [r.dedup_key for r in await store.failed_before(first[2])] == []


async def test_an_upgraded_outbox_keeps_the_order_of_messages_queued_before(
    store_url: str,
) -> None:
    async with await Store.open(store_url, migrations=MIGRATIONS[:3]) as old:
        async with old.transaction() as tx:  # the outbox as version 3 had it
            await tx._conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN recipient")
        for number, (key, event) in enumerate([("open", "opened"), ("resolved", "resolved")]):
            body = message_to_json(page(key, event, "+8613800000001"))
            async with old.transaction() as tx:
                await tx._conn.execute(
                    schema.outbox.insert().values(
                        dedup_key=key,
                        channel="oncall-sms",
                        incident_id="INC-1",
                        event=event,
                        message=body,
                        status="pending",
                        attempts=0,
                        next_attempt_at=T0 + number,
                        created_at=T0 + number,
                    )
                )
    async with await Store.open(store_url) as store:
        assert await store.version() == latest_version()
        assert [r.dedup_key for r in await store.claim_due(T0 + 5, 10, 120)] == ["open"]


# --------------------------------------------------------------------------- on call


async def test_an_upgraded_database_keeps_its_incidents_and_records_who_was_paged(
    store_url: str,
) -> None:
    """Version 5 had no on-call column and no overrides table: both are added, and the
    incidents stored before read back with nobody recorded."""
    async with await Store.open(store_url, migrations=MIGRATIONS[:5]) as old:
        async with old.transaction() as tx:
            incident = new_incident(id=await tx.allocate_incident_id(T0))
            await tx.open_incident(incident)
            await tx._conn.exec_driver_sql("ALTER TABLE incidents DROP COLUMN oncall")
    async with await Store.open(store_url) as store:
        assert await store.version() == latest_version()
        before = await store.get_incident(incident.id)
        assert before is not None and before.oncall == ()
        paged = dataclasses.replace(
            before,
            oncall=(OnCallPick(1, "primary", "li.na"), OnCallPick(2, "secondary", None)),
            updated_at=T0 + 60,
        )
        async with store.transaction() as tx:
            await tx.save_incident(paged, expected_updated_at=before.updated_at)
        after = await store.get_incident(incident.id)
        assert after is not None and after.oncall == paged.oncall

        cover = Override("", "primary", "li.na", T0, T0 + 3600, covers="wang.wei", created_at=T0)
        stored = await store.add_override(cover)
        assert stored.id.startswith("OV-")
        assert await store.list_overrides() == [stored]
        assert await store.list_overrides(ending_after=T0 + 3600) == []  # it has ended
        with pytest.raises(ValueError, match="must end after it starts"):
            await store.add_override(dataclasses.replace(cover, ends_at=T0))
        assert await store.delete_override(stored.id, actor="noc", at=T0 + 10)
        assert not await store.delete_override(stored.id, actor="noc", at=T0 + 11)
        assert await store.list_overrides() == []
