"""The maintenance windows in force: loaded from the store at start, changed through it.

The incident manager asks it which window mutes a subscription now; the API, the CLI
and the vendor feed add and delete windows through it, so memory and store agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from monitor.catalog import Catalog
from monitor.engine.maintenance import in_maintenance
from monitor.engine.model import MaintenanceWindow
from monitor.store import Store, StoreError

log = logging.getLogger(__name__)


class MaintenanceBook:
    def __init__(self, store: Store, wall: Callable[[], float] = time.time) -> None:
        self._store = store
        self._wall = wall
        self.windows: list[MaintenanceWindow] = []

    async def load(self) -> None:
        self.windows = await self._store.list_maintenance()

    def muting(self, customer: str, service: str, now: float) -> MaintenanceWindow | None:
        """The window muting this subscription at ``now``, if any."""
        return in_maintenance(self.windows, customer, service, now)

    def has(self, window_id: str) -> bool:
        return any(window.id == window_id for window in self.windows)

    async def add(
        self, window: MaintenanceWindow, catalog: Catalog | None = None
    ) -> MaintenanceWindow:
        """Store ``window`` (ValueError for a customer or service the catalog lacks)."""
        if catalog is not None:
            if window.customer is not None and window.customer not in catalog.customers:
                raise ValueError(f"unknown customer {window.customer!r}")
            if window.service is not None and window.service not in catalog.services:
                raise ValueError(f"unknown service {window.service!r}")
        stored = await self._store.add_maintenance(window, self._wall())
        self.windows.append(stored)
        log.info(
            "event=maintenance_added id=%s customer=%s service=%s by=%s",
            stored.id,
            stored.customer,
            stored.service,
            stored.created_by,
        )
        return stored

    async def add_once(self, window: MaintenanceWindow) -> None:
        """Store a window another replica may have stored first (the vendor feed's)."""
        if self.has(window.id):
            return
        try:
            await self.add(window)
        except StoreError:
            log.info("event=vendor_maintenance_exists id=%s", window.id)

    async def delete(self, window_id: str, actor: str) -> bool:
        deleted = await self._store.delete_maintenance(window_id, actor=actor, at=self._wall())
        self.windows = [w for w in self.windows if w.id != window_id]
        if deleted:
            log.info("event=maintenance_deleted id=%s by=%s", window_id, actor)
        return deleted
