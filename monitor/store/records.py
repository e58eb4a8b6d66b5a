"""What the store returns and raises, besides the engine's own records (engine/model.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from monitor.engine.model import IncidentError
from monitor.notify.message import RenderedMessage


class OutboxStatus(enum.StrEnum):
    """Where a queued message is in its life: pending → sending → sent or failed."""

    PENDING = "pending"  # waiting for next_attempt_at
    SENDING = "sending"  # claimed by a sender; due again if its lease runs out (a crash mid-send)
    SENT = "sent"  # the provider accepted it; receipt stored
    FAILED = "failed"  # a permanent error or out of retries; nobody will try again


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued notification and its delivery record."""

    id: int
    message: RenderedMessage
    status: OutboxStatus
    attempts: int  # claims so far, including the one in progress
    next_attempt_at: float | None  # due time (pending) or lease expiry (sending)
    created_at: float
    last_error: str | None = None
    receipt_id: str | None = None
    receipt_detail: str | None = None
    sent_at: float | None = None
    failed_at: float | None = None

    @property
    def dedup_key(self) -> str:
        return self.message.dedup_key

    @property
    def channel(self) -> str:
        return self.message.channel


@dataclass(frozen=True, slots=True)
class MonitorRun:
    """One run of a daemon: when it started and its last heartbeat (evidence of coverage)."""

    instance_id: str
    started_at: float
    last_beat_at: float


class StoreError(Exception):
    """The store cannot do what was asked; the message says what the operator can do."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer csp-monitor than this one."""

    def __init__(self, found: int, supported: int, where: str) -> None:
        super().__init__(
            f"the store at {where} has schema version {found}, but this csp-monitor only knows "
            f"versions up to {supported}: upgrade csp-monitor, or point it at another database"
        )
        self.found = found
        self.supported = supported


class IncidentAlreadyOpen(StoreError):
    """The subscription already has an open incident (perhaps opened by another daemon)."""

    def __init__(self, customer: str, service: str, existing_id: str | None) -> None:
        which = f" ({existing_id})" if existing_id else ""
        super().__init__(f"{customer}/{service} already has an open incident{which}")
        self.customer = customer
        self.service = service
        self.existing_id = existing_id


class IncidentNotFound(StoreError, IncidentError, LookupError):
    """No incident with that id (an ``IncidentError`` too: the operator's action cannot be
    done)."""

    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id}")
        self.incident_id = incident_id


class IncidentChanged(StoreError):
    """Someone else saved the incident since it was read (optimistic check failed)."""

    def __init__(self, incident_id: str, expected: float, found: float) -> None:
        super().__init__(
            f"incident {incident_id} was changed by someone else (updated_at {found}, "
            f"expected {expected}): read it again and reapply the change"
        )
        self.incident_id = incident_id


class Fenced(StoreError):
    """A write only the leader may make, from a node that no longer holds the lease."""

    def __init__(self, node_id: str, epoch: int) -> None:
        super().__init__(
            f"node {node_id} no longer leads in epoch {epoch}: the write was refused "
            "(another node leads now, or the lease expired)"
        )
        self.node_id = node_id
        self.epoch = epoch
