"""The persistent store: incidents, timelines, status history, outbox, maintenance windows.

SQLite (WAL, the embedded default) or PostgreSQL (shared by several daemons),
one schema, versioned migrations. See ``Store``.
"""

from monitor.store.codec import message_from_json, message_to_json
from monitor.store.migrations import MIGRATIONS, Migration, latest_version
from monitor.store.records import (
    Fenced,
    IncidentAlreadyOpen,
    IncidentChanged,
    IncidentNotFound,
    MonitorRun,
    OutboxRow,
    OutboxStatus,
    SchemaTooNew,
    StoreError,
)
from monitor.store.store import Store
from monitor.store.writes import Transaction

__all__ = [
    "MIGRATIONS",
    "Fenced",
    "IncidentAlreadyOpen",
    "IncidentChanged",
    "IncidentNotFound",
    "Migration",
    "MonitorRun",
    "OutboxRow",
    "OutboxStatus",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "Transaction",
    "latest_version",
    "message_from_json",
    "message_to_json",
]
