"""Status changes handed to the leader through PostgreSQL: in order, none lost, woken by NOTIFY."""

from __future__ import annotations

import asyncio

import pytest

from checks.vendor_common import VendorStatus
from monitor.cluster.changes import (
    Change,
    ChangeReader,
    ChangeWriter,
    StatusChange,
    VendorReport,
    decode,
    encode,
)
from monitor.probe import Status
from monitor.store import Fenced, Store
from tests.conftest import wait_until


def down(customer: str, at: float) -> StatusChange:
    return StatusChange(customer, "portal", Status.UP, Status.DOWN, "HTTP 503", at, at - 2)


def test_every_kind_of_change_survives_the_queue_unchanged() -> None:
    impaired = VendorStatus("exchange", "m365", "down", "ServiceInterruption", "EX1", "Mail")
    changes: list[Change] = [
        down("contoso", 100.0),
        StatusChange("contoso", "portal", Status.DOWN, Status.UP, "", 200.0, None),
        # the probe locations that said down travel to the leader's incident manager
        StatusChange(
            "contoso", "portal", Status.UP, Status.DEGRADED, "x", 250.0, 248.0, ("bj-unicom",)
        ),
        VendorReport("contoso", None, impaired, 300.0, True, False),
        VendorReport(
            "contoso", impaired, VendorStatus("exchange", "m365", "up"), 400.0, False, True
        ),
    ]
    assert [decode(encode(change)) for change in changes] == changes


def test_a_change_queued_before_locations_existed_said_no_location() -> None:
    queued = (
        '{"kind": "status", "customer": "contoso", "service": "portal", "previous": "up", '
        '"current": "down", "reason": "HTTP 503", "at": 100.0, "since": 98.0}'
    )
    assert decode(queued) == down("contoso", 100.0)


@pytest.mark.parametrize("payload", ["{", '{"kind": "other"}', '{"kind": "status"}'])
def test_a_payload_that_is_not_a_change_is_refused(payload: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        decode(payload)


async def test_changes_from_several_nodes_reach_the_leader_in_order_once(pg_database: str) -> None:
    applied: list[Change] = []

    async def apply(changes: list[Change]) -> None:
        applied.extend(changes)

    async with await Store.open(pg_database) as store:
        writers = [ChangeWriter(store, "node-a"), ChangeWriter(store, "node-b")]
        for writer in writers:
            writer.start()
        sent = [down(f"c{i:02d}", float(i)) for i in range(40)]
        for index, change in enumerate(sent):
            writers[index % 2].put(change)
            if index % 10 == 9:
                await writers[index % 2].drain(10)
        for writer in writers:
            await writer.close(10)
        reader = ChangeReader(store, apply)
        while await reader.apply_queued():
            pass
        assert sorted(applied, key=lambda c: c.at) == sent  # none lost, none twice
        # each node's changes in the order that node made them
        for parity in (0, 1):
            mine = [c for c in applied if int(c.at) % 2 == parity]
            assert mine == sorted(mine, key=lambda c: c.at)
        assert await store.queued_changes(10) == []  # applied changes leave the queue


async def test_a_queued_change_wakes_the_leader_without_waiting_for_its_poll(
    pg_database: str,
) -> None:
    applied: list[Change] = []

    async def apply(changes: list[Change]) -> None:
        applied.extend(changes)

    async with await Store.open(pg_database) as store:
        stop = asyncio.Event()
        # a poll interval far longer than the test: only NOTIFY can wake it in time
        reader = asyncio.create_task(ChangeReader(store, apply, poll_interval=3600).run(stop))
        try:
            await asyncio.sleep(0.5)  # listening
            await store.queue_changes("node-a", [encode(down("contoso", 1.0))])
            await wait_until(lambda: len(applied) == 1, 20, "the leader to be woken")
        finally:
            stop.set()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def test_a_deposed_leader_cannot_delete_the_queue_its_successor_needs(
    pg_database: str,
) -> None:
    async with await Store.open(pg_database) as store:
        lease = await store.acquire_leadership("node-a", 30)
        assert lease is not None
        await store.queue_changes("node-b", [encode(down("contoso", 1.0))])
        async with await Store.open(pg_database, fence=("node-a", lease.epoch + 1)) as stale:

            async def apply(changes: list[Change]) -> None:
                pass

            with pytest.raises(Fenced):
                await ChangeReader(stale, apply).apply_queued()
        assert len(await store.queued_changes(10)) == 1  # still there for the real leader
