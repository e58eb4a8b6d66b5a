"""Conversions between the engine's records and table rows (and JSON for messages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import RowMapping

from monitor.engine.model import (
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
from monitor.notify.message import RenderedMessage
from monitor.probe import Status
from monitor.store.records import MonitorRun, OutboxRow, OutboxStatus

Row = RowMapping


def message_to_json(message: RenderedMessage) -> dict[str, Any]:
    """A RenderedMessage as a JSON-ready dict (every field, so the outbox row stands alone)."""
    return {
        "dedup_key": message.dedup_key,
        "channel": message.channel,
        "event": message.event,
        "recipients": list(message.recipients),
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "sms": message.sms,
        "payload": message.payload,
        "incident_id": message.incident_id,
        "chat": message.chat,
        "status": message.status,
        "ack_url": message.ack_url,
        "incident_url": message.incident_url,
        "attachments": [list(a) for a in message.attachments],
        "voice": message.voice,
        "language": message.language,
    }


def message_from_json(data: Mapping[str, Any]) -> RenderedMessage:
    """The inverse of message_to_json."""
    return RenderedMessage(
        dedup_key=data["dedup_key"],
        channel=data["channel"],
        event=data["event"],
        recipients=tuple(data.get("recipients", ())),
        subject=data.get("subject", ""),
        text=data.get("text", ""),
        html=data.get("html"),
        sms=data.get("sms", ""),
        payload=dict(data.get("payload") or {}),
        incident_id=data.get("incident_id"),
        chat=data.get("chat", ""),
        status=data.get("status", ""),
        ack_url=data.get("ack_url"),
        incident_url=data.get("incident_url"),
        attachments=tuple(
            (str(name), str(kind), str(body)) for name, kind, body in data.get("attachments") or ()
        ),
        voice=data.get("voice", ""),
        language=data.get("language", "en"),
    )


def incident_values(incident: Incident) -> dict[str, Any]:
    """Column values of an incident (all of them, id included)."""
    return {
        "id": incident.id,
        "customer": incident.customer,
        "service": incident.service,
        "status": str(incident.status),
        "severity": str(incident.severity),
        "state": str(incident.state),
        "opened_at": incident.opened_at,
        "policy": incident.policy.to_json(),
        "reason": incident.reason,
        "escalation_level": incident.escalation_level,
        "next_escalation_at": incident.next_escalation_at,
        "next_reminder_at": incident.next_reminder_at,
        "acknowledged_at": incident.acknowledged_at,
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": incident.resolved_at,
        "recovering_since": incident.recovering_since,
        "flapping": incident.flapping,
        "muted": incident.muted,
        "notified": incident.notified,
        "vendor_case": incident.vendor_case,
        "vendor_group": incident.vendor_group,
        "vendor_issue": incident.vendor_issue,
        "updated_at": incident.updated_at,
        "oncall": [pick.to_json() for pick in incident.oncall],
        "down_from": ",".join(incident.down_from),  # location names have no commas (a slug)
    }


def incident_from_row(row: Row) -> Incident:
    return Incident(
        id=row["id"],
        customer=row["customer"],
        service=row["service"],
        status=Status(row["status"]),
        severity=Severity(row["severity"]),
        state=IncidentState(row["state"]),
        opened_at=row["opened_at"],
        policy=PolicySnapshot.from_json(row["policy"]),
        reason=row["reason"],
        escalation_level=row["escalation_level"],
        next_escalation_at=row["next_escalation_at"],
        next_reminder_at=row["next_reminder_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        recovering_since=row["recovering_since"],
        flapping=bool(row["flapping"]),
        muted=bool(row["muted"]),
        notified=bool(row["notified"]),
        vendor_case=row["vendor_case"],
        vendor_group=row["vendor_group"],
        vendor_issue=row.get("vendor_issue"),
        updated_at=row["updated_at"],
        oncall=tuple(OnCallPick.from_json(pick) for pick in row.get("oncall") or ()),
        down_from=tuple(name for name in (row.get("down_from") or "").split(",") if name),
    )


def event_values(event: IncidentEvent) -> dict[str, Any]:
    return {
        "incident_id": event.incident_id,
        "at": event.at,
        "kind": event.kind,
        "detail": event.detail,
        "actor": event.actor,
    }


def event_from_row(row: Row) -> IncidentEvent:
    return IncidentEvent(
        incident_id=row["incident_id"],
        at=row["at"],
        kind=row["kind"],
        detail=dict(row["detail"] or {}),
        actor=row["actor"],
    )


def interval_from_row(row: Row) -> StatusInterval:
    return StatusInterval(
        customer=row["customer"],
        service=row["service"],
        status=Status(row["status"]),
        start=row["started_at"],
        end=row["ended_at"],
    )


def maintenance_values(window: MaintenanceWindow, created_at: float) -> dict[str, Any]:
    return {
        "id": window.id,
        "starts_at": window.starts_at,
        "ends_at": window.ends_at,
        "customer": window.customer,
        "service": window.service,
        "recurrence": window.recurrence,
        "timezone": window.timezone,
        "reason": window.reason,
        "created_by": window.created_by,
        "created_at": created_at,
    }


def maintenance_from_row(row: Row) -> MaintenanceWindow:
    return MaintenanceWindow(
        id=row["id"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        customer=row["customer"],
        service=row["service"],
        recurrence=row["recurrence"],
        timezone=row["timezone"],
        reason=row["reason"],
        created_by=row["created_by"],
    )


def override_values(override: Override) -> dict[str, Any]:
    return {
        "id": override.id,
        "schedule": override.schedule,
        "person": override.person,
        "covers": override.covers,
        "starts_at": override.starts_at,
        "ends_at": override.ends_at,
        "reason": override.reason,
        "created_by": override.created_by,
        "created_at": override.created_at,
    }


def override_from_row(row: Row) -> Override:
    return Override(
        id=row["id"],
        schedule=row["schedule"],
        person=row["person"],
        covers=row["covers"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        reason=row["reason"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def recipient_key(message: RenderedMessage) -> str:
    """The ``recipient`` column: whom a message is for, as one comparable string."""
    return ",".join(message.recipients)


def outbox_values(message: RenderedMessage, at: float) -> dict[str, Any]:
    """A new, immediately due outbox row for ``message``."""
    return {
        "dedup_key": message.dedup_key,
        "channel": message.channel,
        "incident_id": message.incident_id,
        "event": message.event,
        "recipient": recipient_key(message),
        "message": message_to_json(message),
        "status": str(OutboxStatus.PENDING),
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }


def _time(value: float | None) -> float | None:
    # SQLite's RETURNING hands back 1795000060 as an int, before the column's REAL affinity
    # applies; times are floats everywhere else.
    return float(value) if value is not None else None


def outbox_from_row(row: Row) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        message=message_from_json(row["message"]),
        status=OutboxStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=_time(row["next_attempt_at"]),
        created_at=float(row["created_at"]),
        last_error=row["last_error"],
        receipt_id=row["receipt_id"],
        receipt_detail=row["receipt_detail"],
        sent_at=_time(row["sent_at"]),
        failed_at=_time(row["failed_at"]),
    )


def run_from_row(row: Row) -> MonitorRun:
    return MonitorRun(
        instance_id=row["instance_id"],
        started_at=row["started_at"],
        last_beat_at=row["last_beat_at"],
    )
