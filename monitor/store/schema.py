"""The store's tables, declared once for SQLite and PostgreSQL.

Times are Unix seconds (double precision, UTC) like everywhere in the engine,
so that no time zone or driver-specific datetime type sits between the engine
and the database. JSON columns use the generic ``JSON`` type: ``json`` on
PostgreSQL, text on SQLite.

Two partial unique indexes carry the invariants two daemons on one
PostgreSQL must not break: one open incident per subscription, one open
status interval per subscription.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Named constraints, so a later migration can drop or alter them by name on both dialects.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The predicates of the "one open incident per subscription" indexes. Written as SQL text so
# the DDL and the ON CONFLICT target of open_incident() use the very same expression.
# One open incident per customer's subscription, and (version 11) one open vendor-side
# incident (customer '*') per service and location signature (its down_from).
OPEN_CUSTOMER_INCIDENT = text("state <> 'resolved' AND customer <> '*'")
OPEN_VENDOR_INCIDENT = text("state <> 'resolved' AND customer = '*'")
OPEN_INTERVAL = text("ended_at IS NULL")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Double, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("customer", String(100), nullable=False),
    Column("service", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("opened_at", Double, nullable=False),
    Column("policy", JSON, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("next_escalation_at", Double),
    Column("next_reminder_at", Double),
    Column("acknowledged_at", Double),
    Column("acknowledged_by", String(200)),
    Column("resolved_at", Double),
    Column("recovering_since", Double),
    Column("flapping", Boolean, nullable=False, default=False),
    Column("muted", Boolean, nullable=False, default=False),
    Column("notified", Boolean, nullable=False, default=False),
    Column("vendor_case", String(200)),
    Column("vendor_group", String(100)),
    Column("vendor_issue", String(100)),  # version 3
    Column("updated_at", Double, nullable=False),
    Column("oncall", JSON),  # version 6: who steps paged through schedules
    # version 11: the probe locations that said down, comma-separated ('' for none)
    Column("down_from", String(1000), nullable=False, server_default=""),
)
Index(
    "uq_incidents_open_subscription",
    incidents.c.customer,
    incidents.c.service,
    unique=True,
    sqlite_where=OPEN_CUSTOMER_INCIDENT,
    postgresql_where=OPEN_CUSTOMER_INCIDENT,
)
Index(
    "uq_incidents_open_vendor_side",
    incidents.c.service,
    incidents.c.down_from,
    unique=True,
    sqlite_where=OPEN_VENDOR_INCIDENT,
    postgresql_where=OPEN_VENDOR_INCIDENT,
)
Index("ix_incidents_opened_at", incidents.c.opened_at)
Index(
    "ix_incidents_subscription_opened",
    incidents.c.customer,
    incidents.c.service,
    incidents.c.opened_at,
)

# One row per UTC day: the last incident number handed out that day (see allocate_incident_id).
incident_counters = Table(
    "incident_counters",
    metadata,
    Column("day", String(8), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "incident_id", String(40), ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", Double, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("actor", String(200)),
)
Index(
    "ix_incident_events_timeline",
    incident_events.c.incident_id,
    incident_events.c.at,
    incident_events.c.id,
)

status_intervals = Table(
    "status_intervals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer", String(100), nullable=False),
    Column("service", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double),
)
Index(
    "uq_status_intervals_open_subscription",
    status_intervals.c.customer,
    status_intervals.c.service,
    unique=True,
    sqlite_where=OPEN_INTERVAL,
    postgresql_where=OPEN_INTERVAL,
)
Index(
    "ix_status_intervals_subscription_start",
    status_intervals.c.customer,
    status_intervals.c.service,
    status_intervals.c.started_at,
)

# Evidence that monitoring ran: one row per daemon run, its start and its last heartbeat.
# The time between one run's last beat and the next run's start is a coverage gap.
monitor_heartbeat = Table(
    "monitor_heartbeat",
    metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("started_at", Double, primary_key=True),
    Column("last_beat_at", Double, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedup_key", String(400), nullable=False, unique=True),
    Column("channel", String(100), nullable=False),
    # Not a foreign key: a vendor-side (correlated) page or a report may name no stored incident.
    Column("incident_id", String(40)),
    Column("event", String(40), nullable=False),
    # Who the message is for (its recipients, comma-separated; "" for the channel's own list):
    # messages of one incident to one recipient of one channel are delivered in queue order.
    Column("recipient", Text),
    Column("message", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # When a pending row is due; for a row being sent, when its lease expires.
    Column("next_attempt_at", Double),
    Column("last_error", Text),
    Column("receipt_id", String(400)),
    Column("receipt_detail", Text),
    Column("created_at", Double, nullable=False),
    Column("sent_at", Double),
    Column("failed_at", Double),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("ix_outbox_incident_id", outbox.c.incident_id)

maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("customer", String(100)),
    Column("service", String(100)),
    Column("recurrence", String(20)),
    Column("timezone", String(64), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("created_by", String(200)),
    Column("created_at", Double, nullable=False),
)

# On-call overrides (version 6): someone covers a schedule for a while. The schedules
# themselves are config; only these changes made through the API and CLI are stored.
schedule_overrides = Table(
    "schedule_overrides",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("schedule", String(100), nullable=False),
    Column("person", String(100), nullable=False),
    Column("covers", String(100)),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("created_by", String(200)),
    Column("created_at", Double, nullable=False),
)
Index("ix_schedule_overrides_ends_at", schedule_overrides.c.ends_at)

# The audit log (see audit.py): append-only, each entry chained to the one before by an HMAC.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Double, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("actor", String(200)),
    Column("detail", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_log_at", audit_log.c.at)

# Cluster (version 5). Heartbeats and lease expiry are the database's clock (now()), so
# nodes whose clocks disagree still agree on who is alive and who leads.
members = Table(
    "members",
    metadata,
    Column("node_id", String(200), primary_key=True),
    Column("listen", String(300), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("version", String(50), nullable=False),
    Column("config_digest", String(64), nullable=False),
    # a blind node (its canaries fail) leaves the shard: its targets go to nodes that see
    Column("blind", Boolean, nullable=False, server_default=text("false")),
    # version 9: where the node probes from; targets listed for a location go to its nodes
    Column("location", String(100), nullable=False, server_default=text("'default'")),
)

# One row: who leads, until when, and the fencing epoch (incremented on every takeover).
leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("acquired_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)

# Status changes a node hands to the leader (cluster): queued by whichever node probes the
# subscription, applied and deleted by the leader in id order. A table, not only NOTIFY:
# a change queued while no node leads (or while the leader changes) waits here.
status_changes = Table(
    "status_changes",
    metadata,
    # 64 bits on PostgreSQL: the queue's ids are never reused; SQLite's integer key is 64-bit
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("node_id", String(200), nullable=False),
    Column("queued_at", Double, nullable=False),
    Column("payload", Text, nullable=False),
)

# Voice calls placed (version 8): each provider allows only a few calls per callee (per
# minute, hour, day, night), so the calls are counted here, across restarts and nodes.
voice_calls = Table(
    "voice_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(100), nullable=False),
    Column("callee", String(40), nullable=False),
    Column("at", Double, nullable=False),
    Column("incident_id", String(40)),
)
Index("ix_voice_calls_callee", voice_calls.c.channel, voice_calls.c.callee, voice_calls.c.at)

# Version 9: each location's latest report on each target it probes (cluster). The node that
# decides the target's status reads them (a quorum of locations must agree it is down).
# One row per (target, location), overwritten: the history is the subscription's.
location_reports = Table(
    "location_reports",
    metadata,
    Column("target_id", String(400), primary_key=True),
    Column("location", String(100), primary_key=True),
    Column("node_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", Double, nullable=False),  # the probe's time (the reporting node's clock)
    Column("since", Double, nullable=False),  # since when that location sees this status
    Column("written_at", Double, nullable=False),  # the database's clock: readers poll by it
)
Index("ix_location_reports_written_at", location_reports.c.written_at)

# Version 10: what each location saw of each target it probes, as changes at their own
# times: an agent cut off from the server sends its results late, and they are written at
# the time they happened. Reports by location are drawn from it. A change sent twice (a
# batch resent after its answer was lost) is one row.
location_history = Table(
    "location_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target_id", String(400), nullable=False),
    Column("location", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("since", Double, nullable=False),  # when that location saw the change
    Column("reason", Text, nullable=False),
    Column("node_id", String(200), nullable=False),  # the node or agent that probed
    Column("written_at", Double, nullable=False),  # when it reached the store
    UniqueConstraint("target_id", "location", "since", name="uq_location_history_change"),
)
Index("ix_location_history_since", location_history.c.since)
