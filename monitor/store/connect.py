"""Database URLs and engines: the user writes a path or a URL, the store uses async drivers.

Accepted: a plain path (``data/monitor.db``), ``sqlite:///path/to/file.db``,
``postgresql://user@host:port/db`` (also ``postgres://``); the explicit async
forms ``sqlite+aiosqlite://`` and ``postgresql+asyncpg://`` pass through.

SQLite runs in WAL mode (readers never wait for the writer), with foreign keys
on and a busy timeout so that two connections queue instead of failing with
"database is locked". Write transactions start with ``BEGIN IMMEDIATE``: they
take the write lock up front, so a transaction never fails half-way when it
upgrades from reading to writing (busy_timeout cannot help with that case).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from monitor.store.records import StoreError

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"
BUSY_TIMEOUT_MS = 30_000
# Execution option marking a connection whose transactions write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "csp_monitor_write"


def async_url(url: str | Path) -> URL:
    """The SQLAlchemy async URL for a user-facing path or URL; StoreError when unusable."""
    text = str(url)
    if isinstance(url, Path) or "://" not in text:
        return URL.create(SQLITE_DRIVER, database=str(Path(text).expanduser().absolute()))
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise StoreError(f"not a database URL: {_safe(text)}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise StoreError(
                "the store needs a file: write sqlite:///path/to/monitor.db, not an in-memory "
                "database (it would not survive a restart)"
            )
        return parsed.set(drivername=SQLITE_DRIVER)
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        return parsed.set(drivername=POSTGRES_DRIVER)
    raise StoreError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)}: "
        "use a file path, sqlite:///path/to/monitor.db or postgresql://user@host:5432/db"
    )


def display_url(url: URL) -> str:
    """The URL as logs and errors may show it: never with its password."""
    return url.render_as_string(hide_password=True)


def _safe(text: str) -> str:
    # An unparseable URL may still hold user:password@; keep only what precedes it.
    scheme, _, rest = text.partition("://")
    return f"{scheme}://…{rest.rpartition('@')[2]}" if "@" in rest else text


def create_engine(url: URL, application_name: str | None = None) -> AsyncEngine:
    """An async engine for ``url`` (from async_url); SQLite's directory is created if needed.
    ``application_name``: how PostgreSQL lists the connections (which node holds which)."""
    if url.get_backend_name() == "sqlite":
        assert url.database is not None  # async_url refuses in-memory databases
        _private_database_file(Path(url.database))
        engine = create_async_engine(url)
        _tune_sqlite(engine)
        return engine
    # pre_ping: a PostgreSQL restart or failover must not break the first query after it.
    settings = {"application_name": application_name} if application_name else {}
    return create_async_engine(url, pool_pre_ping=True, connect_args={"server_settings": settings})


def _private_database_file(path: Path) -> None:
    """Create the SQLite file's directory (0700) and the empty file (0600) before SQLite
    opens it, with explicit modes rather than the process umask: SQLite gives its WAL and
    shared-memory files the database file's permissions. Existing ones are left alone."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, which would not BEGIN before
        # SELECT or DDL; SQLAlchemy's begin hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # synchronous stays FULL (the default): a queued page must survive a power cut too.
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")
