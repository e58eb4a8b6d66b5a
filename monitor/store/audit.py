"""The audit log: an append-only, hash-chained record of everything that happened.

Every status change, incident change (acknowledgements with who), delivery
receipt, maintenance change and config load is one entry. Each entry's hash
is an HMAC-SHA256, under a key kept outside the database, of its own content
and the previous entry's hash, so editing, deleting or reordering rows
directly in the database breaks the chain where it happened, and a rewritten
chain cannot be forged without the key. Retention prunes old entries by
appending a signed checkpoint that vouches for the last pruned hash.

Appends are serialised: SQLite has one writer; on PostgreSQL a transaction
takes an advisory lock before reading the chain head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store import schema

_audit = schema.audit_log
_AUDIT_LOCK_ID = 0x63737061  # "cspa"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    kind: (
        str  # status, incident, delivery, delivery_failed, maintenance, config, monitor, checkpoint
    )
    subject: str
    actor: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    message: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.message}"


_ROWS_PER_INSERT = 2500


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(
    key: bytes,
    seq: int,
    at: float,
    kind: str,
    subject: str,
    actor: str | None,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    payload = _canonical([seq, f"{at:.6f}", kind, subject, actor, detail, prev_hash])
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _checkpoint_signature(key: bytes, pruned_through: int, pruned_hash: str) -> str:
    message = f"checkpoint|{pruned_through}|{pruned_hash}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def head(connection: AsyncConnection) -> tuple[int, str]:
    """(seq, hash) of the last entry; (0, "") for an empty log."""
    row = (
        await connection.execute(
            select(_audit.c.seq, _audit.c.hash).order_by(_audit.c.seq.desc()).limit(1)
        )
    ).first()
    return (0, "") if row is None else (int(row.seq), str(row.hash))


async def append(
    connection: AsyncConnection,
    key: bytes,
    records: Iterable[tuple[float, str, str, str | None, dict[str, Any]]],
) -> tuple[int, str]:
    """Append (at, kind, subject, actor, detail) records in order; return the new head."""
    records = list(records)
    if not records:
        return await head(connection)
    if connection.dialect.name == "postgresql":
        await connection.execute(select(func.pg_advisory_xact_lock(_AUDIT_LOCK_ID)))
    seq, previous = await head(connection)
    rows: list[dict[str, Any]] = []
    for at, kind, subject, actor, detail in records:
        if len(rows) == _ROWS_PER_INSERT:
            # the loop runs other work while the database takes these: hashing and
            # inserting 50,000 entries at once (the first statuses) held it for 0.3 s
            await connection.execute(insert(_audit), rows)
            rows = []
        seq += 1
        at = round(float(at), 6)
        digest = entry_hash(key, seq, at, kind, subject, actor, detail, previous)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "kind": kind,
                "subject": subject,
                "actor": actor,
                "detail": detail,
                "prev_hash": previous,
                "hash": digest,
            }
        )
        previous = digest
    await connection.execute(insert(_audit), rows)
    return seq, previous


async def entries(
    connection: AsyncConnection, *, after: int = 0, limit: int = 10_000
) -> list[AuditEntry]:
    result = await connection.execute(
        select(_audit).where(_audit.c.seq > after).order_by(_audit.c.seq).limit(limit)
    )
    return [
        AuditEntry(
            int(r.seq), float(r.at), r.kind, r.subject, r.actor, dict(r.detail), r.prev_hash, r.hash
        )
        for r in result
    ]


def verify(
    chain: Sequence[AuditEntry], key: bytes, expected_head: tuple[int, str] | None = None
) -> list[ChainProblem]:
    """Every break in the chain, each naming the entry where it shows.

    ``expected_head``: a head recorded elsewhere (a report, the head file); a
    chain that ends before it was truncated.
    """
    problems: list[ChainProblem] = []
    vouched: dict[int, str] = {}
    for entry in chain:
        if entry.kind == CHECKPOINT:
            through, pruned = entry.detail.get("pruned_through"), entry.detail.get("pruned_hash")
            signature = entry.detail.get("signature", "")
            if (
                isinstance(through, int)
                and isinstance(pruned, str)
                and hmac.compare_digest(signature, _checkpoint_signature(key, through, pruned))
            ):
                vouched[through] = pruned
    previous: AuditEntry | None = None
    for entry in chain:
        computed = entry_hash(
            key,
            entry.seq,
            entry.at,
            entry.kind,
            entry.subject,
            entry.actor,
            entry.detail,
            entry.prev_hash,
        )
        if not hmac.compare_digest(computed, entry.hash):
            problems.append(
                ChainProblem(
                    entry.seq,
                    "content does not match its hash (edited, or moved from another position)",
                )
            )
        if previous is None:
            if entry.seq != 1 and vouched.get(entry.seq - 1) != entry.prev_hash:
                problems.append(
                    ChainProblem(
                        entry.seq,
                        f"entries before {entry.seq} are "
                        "missing and no checkpoint vouches for "
                        "their pruning (deleted)",
                    )
                )
            elif entry.seq == 1 and entry.prev_hash != "":
                problems.append(ChainProblem(1, "the first entry claims a predecessor"))
        elif entry.seq != previous.seq + 1:
            problems.append(
                ChainProblem(
                    entry.seq, f"entries {previous.seq + 1}–{entry.seq - 1} are missing (deleted)"
                )
            )
        elif entry.prev_hash != previous.hash:
            problems.append(
                ChainProblem(
                    entry.seq,
                    "does not follow the entry before it "
                    "(reordered, or its predecessor was edited)",
                )
            )
        previous = entry
    if expected_head is not None:
        last_seq = previous.seq if previous else 0
        if last_seq < expected_head[0]:
            problems.append(
                ChainProblem(
                    last_seq + 1,
                    f"entries {last_seq + 1}–"
                    f"{expected_head[0]} are missing: the log "
                    "ends before its recorded head (deleted)",
                )
            )
        elif (
            previous is not None
            and last_seq == expected_head[0]
            and previous.hash != expected_head[1]
        ):
            problems.append(ChainProblem(last_seq, "differs from the recorded head"))
    return problems


async def prune(connection: AsyncConnection, key: bytes, before: float, now: float) -> int:
    """Delete entries older than ``before`` and append a signed checkpoint for them."""
    last = (
        await connection.execute(
            select(_audit.c.seq, _audit.c.hash)
            .where(_audit.c.at < before, _audit.c.kind != CHECKPOINT)
            .order_by(_audit.c.seq.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return 0
    through, pruned_hash = int(last.seq), str(last.hash)
    head_seq, _ = await head(connection)
    if through >= head_seq:  # never prune the head itself: the chain must go on from it
        return 0
    removed = await connection.execute(
        delete(_audit).where(_audit.c.seq <= through).returning(_audit.c.seq)
    )
    count = len(removed.all())
    signature = _checkpoint_signature(key, through, pruned_hash)
    await append(
        connection,
        key,
        [
            (
                now,
                CHECKPOINT,
                "audit_log",
                None,
                {
                    "pruned_through": through,
                    "pruned_hash": pruned_hash,
                    "pruned_before": before,
                    "signature": signature,
                },
            )
        ],
    )
    return count
