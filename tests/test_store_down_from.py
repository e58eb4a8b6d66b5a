"""Incidents keep the probe locations that saw them down (migration 11), and a service may
have several open vendor-side incidents: one per set of locations its customers are seen
down from only. SQLite and PostgreSQL both (the fixtures of test_store.py)."""

from __future__ import annotations

import dataclasses

import pytest

from monitor.store import IncidentAlreadyOpen, Store
from monitor.store.migrations import MIGRATIONS, latest_version
from tests.test_store import T0, new_incident, store, store_url  # noqa: F401

BJ, SH = "bj-unicom", "sh-telecom"


async def opened(store: Store, **changes: object) -> str:  # noqa: F811
    async with store.transaction() as tx:
        incident = new_incident(**changes)
        incident = dataclasses.replace(incident, id=await tx.allocate_incident_id(T0))
        return (await tx.open_incident(incident)).id


async def test_an_incident_keeps_the_locations_that_saw_it_down(store: Store) -> None:  # noqa: F811
    incident_id = await opened(store, status="degraded", down_from=(BJ,))
    stored = await store.get_incident(incident_id)
    assert stored is not None and stored.down_from == (BJ,)
    async with store.transaction() as tx:
        changed = dataclasses.replace(stored, down_from=(BJ, SH), updated_at=T0 + 60)
        await tx.save_incident(changed, expected_updated_at=stored.updated_at)
    [again] = await store.open_incidents()
    assert again.down_from == (BJ, SH)


async def test_vendor_side_incidents_are_one_per_service_and_locations(
    store: Store,  # noqa: F811
) -> None:
    everywhere = await opened(store, customer="*")
    from_bj = await opened(store, customer="*", status="degraded", down_from=(BJ,))
    with pytest.raises(IncidentAlreadyOpen) as caught:
        await opened(store, customer="*", status="degraded", down_from=(BJ,))
    assert caught.value.existing_id == from_bj
    with pytest.raises(IncidentAlreadyOpen) as caught:
        await opened(store, customer="*")
    assert caught.value.existing_id == everywhere
    # a customer's subscription has one open incident, whatever the locations say
    first = await opened(store, down_from=(BJ,))
    with pytest.raises(IncidentAlreadyOpen) as caught:
        await opened(store, down_from=(SH,))
    assert caught.value.existing_id == first
    assert sorted(i.id for i in await store.open_incidents()) == sorted(
        [everywhere, from_bj, first]
    )


async def test_a_version_9_database_learns_where_incidents_were_seen_from(
    store_url: str,  # noqa: F811
) -> None:
    async with await Store.open(store_url, migrations=MIGRATIONS[:9]) as old:
        async with old.transaction() as tx:
            incident = new_incident(id=await tx.allocate_incident_id(T0), customer="*")
            await tx.open_incident(incident)
            # step 1 made today's table: back to version 9's (no column, the old index)
            for name in ("uq_incidents_open_subscription", "uq_incidents_open_vendor_side"):
                await tx._conn.exec_driver_sql(f"DROP INDEX {name}")
            await tx._conn.exec_driver_sql("ALTER TABLE incidents DROP COLUMN down_from")
            await tx._conn.exec_driver_sql(
                "CREATE UNIQUE INDEX uq_incidents_open_subscription ON incidents "
                "(customer, service) WHERE state <> 'resolved'"
            )
    async with await Store.open(store_url) as store:  # noqa: F811
        assert await store.version() == latest_version()
        before = await store.get_incident(incident.id)
        assert before is not None and before.down_from == ()
        # the vendor-wide incident stays open beside a new one for bj-unicom only
        from_bj = await opened(store, customer="*", status="degraded", down_from=(BJ,))
        assert {i.id for i in await store.open_incidents()} == {incident.id, from_bj}
