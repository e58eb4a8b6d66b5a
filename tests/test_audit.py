"""The audit log: appended by every change, verified, and tamper-evident in the database."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.engine.incidents import open_incident
from monitor.engine.model import IncidentEvent, MaintenanceWindow, PolicySnapshot
from monitor.notify.message import DeliveryReceipt, RenderedMessage
from monitor.store import Store

KEY = b"k" * 32
T0 = 1_800_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{db}", audit_key=KEY)
    try:
        yield opened
    finally:
        await opened.close()


async def write_history(store: Store) -> None:
    """A little of everything the daemon records."""
    await store.record_status("contoso", "exchange-online", "up", T0)
    await store.record_status("contoso", "exchange-online", "down", T0 + 60)
    incident, decision = open_incident(
        "INC-1",
        "contoso",
        "exchange-online",
        "down",
        "status 503",
        PolicySnapshot("p", ()),
        T0 + 60,
    )
    async with store.transaction() as tx:
        await tx.open_incident(incident)
        await tx.add_events(
            [*decision.events, IncidentEvent("INC-1", T0 + 300, "acknowledged", {}, "li.wei")]
        )
    await store.enqueue(
        [RenderedMessage("INC-1:step:0:noc-email", "noc-email", "opened", (), "subject", "text")],
        T0 + 61,
    )
    [row] = await store.claim_due(T0 + 61, 10, 60)
    await store.mark_sent(row.id, DeliveryReceipt("<id@example.cn>"), T0 + 62)
    await store.add_maintenance(
        MaintenanceWindow("MW-1", T0, T0 + 3600, customer="contoso", created_by="noc"), T0 + 70
    )
    await store.audit(T0 + 80, "config", "config.yaml", None, digest="abc123")
    await store.record_status("contoso", "exchange-online", "up", T0 + 900)


def sql(db: Path, statement: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(statement)


async def test_every_kind_of_change_is_chained_and_verifies(store: Store) -> None:
    await write_history(store)
    entries = await store.audit_entries()
    kinds = [(e.kind, e.subject, e.actor) for e in entries]
    assert ("incident", "INC-1", "li.wei") in kinds  # who acknowledged
    assert ("delivery", "INC-1:step:0:noc-email", None) in kinds
    assert ("maintenance", "MW-1", "noc") in kinds
    assert ("config", "config.yaml", None) in kinds
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    delivery = next(e for e in entries if e.kind == "delivery")
    assert delivery.detail["receipt"] == "<id@example.cn>"
    checked, problems = await store.verify_audit(KEY, await store.audit_head())
    assert (checked, problems) == (len(entries), [])


async def test_an_edited_row_is_named(store: Store, db: Path) -> None:
    await write_history(store)
    sql(db, "UPDATE audit_log SET actor = 'someone.else' WHERE seq = 4")
    _, problems = await store.verify_audit(KEY)
    assert [str(p) for p in problems] == [
        "entry 4: content does not match its hash (edited, or moved from another position)"
    ]


async def test_a_deleted_row_is_named(store: Store, db: Path) -> None:
    await write_history(store)
    sql(db, "DELETE FROM audit_log WHERE seq = 3")
    _, problems = await store.verify_audit(KEY)
    assert [str(p) for p in problems] == ["entry 4: entries 3–3 are missing (deleted)"]


async def test_reordered_rows_are_named(store: Store, db: Path) -> None:
    await write_history(store)
    sql(db, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    sql(db, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    sql(db, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    _, problems = await store.verify_audit(KEY)
    assert {p.seq for p in problems} == {2, 3, 4}
    assert all("hash" in p.message or "follow" in p.message for p in problems)


async def test_a_truncated_tail_is_caught_against_the_recorded_head(store: Store, db: Path) -> None:
    await write_history(store)
    head = await store.audit_head()
    sql(db, f"DELETE FROM audit_log WHERE seq >= {head[0] - 1}")
    _, problems = await store.verify_audit(KEY, head)
    assert [p.seq for p in problems] == [head[0] - 1]
    assert "ends before its recorded head" in problems[0].message


async def test_a_rewritten_chain_without_the_key_is_caught(store: Store) -> None:
    await write_history(store)
    _, problems = await store.verify_audit(b"x" * 32)
    assert problems and problems[0].seq == 1


async def test_retention_prunes_behind_a_signed_checkpoint(store: Store, db: Path) -> None:
    await write_history(store)
    await store.record_status("contoso", "exchange-online", "down", T0 + 400 * 86400)
    before = len(await store.audit_entries())
    counts = await store.prune(T0 + 86400, T0 + 400 * 86400 + 10, audit_before=T0 + 86400)
    entries = await store.audit_entries()
    assert counts["audit_log"] == before - 1  # all but the newest, which the chain needs
    assert entries[-2].kind == "checkpoint" and entries[-1].kind == "retention"
    assert (await store.verify_audit(KEY, await store.audit_head()))[1] == []
    checkpoint = entries[-2].seq
    sql(db, f"DELETE FROM audit_log WHERE seq = {checkpoint}")
    _, problems = await store.verify_audit(KEY)
    assert any("no checkpoint vouches" in p.message for p in problems)
