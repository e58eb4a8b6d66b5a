"""The daily on-call check: schedules with nobody on call in the next 7 days are told
to the operators (``monitor.ops_channels``) as the ``oncall_gap`` ops message.

Like ``blind`` it concerns no incident: it has a context of its own
(:class:`OnCallGapContext`), is rendered from ``alert_templates/oncall_gap/`` and
queued in the outbox; its dedup key names the day, so nodes sharing a store (each
runs the check) send it once. ``csp-monitor validate`` renders it with
:func:`sample_gap_context`.
"""

from __future__ import annotations

import time as clock
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TypedDict

from monitor.catalog import Catalog
from monitor.engine.oncall import Shift
from monitor.notify.message import RenderedMessage
from monitor.notify.templates import (
    RenderedParts,
    TemplateProblem,
    TemplateRenderer,
    TemplateRenderError,
)
from monitor.ops_messages import OpsMonitorContext, duration_text

EVENT = "oncall_gap"
HORIZON_DAYS = 7
TIMEZONE = "Asia/Shanghai"


class GapContext(TypedDict):
    start: datetime  # aware
    end: datetime
    duration_text: str  # "12 h"


class ScheduleGapsContext(TypedDict):
    name: str
    time_zone: str  # the schedule's, for its times
    hours: float  # nobody on call, in total
    gaps: list[GapContext]


class OnCallGapContext(TypedDict):
    """Everything the oncall_gap templates may use."""

    event: str
    horizon_days: int
    schedules: list[ScheduleGapsContext]  # only those with a gap
    recipient: str
    monitor: OpsMonitorContext
    now: datetime
    timezone: str


def gap_context(
    gaps: Mapping[str, Sequence[Shift]],
    zones: Mapping[str, str],
    now: float,
    recipient: str = "",
    public_url: str | None = None,
) -> OnCallGapContext:
    schedules: list[ScheduleGapsContext] = [
        {
            "name": name,
            "time_zone": zones.get(name, TIMEZONE),
            "hours": round(sum(g.end - g.start for g in stretches) / 3600, 1),
            "gaps": [
                {
                    "start": datetime.fromtimestamp(g.start, UTC),
                    "end": datetime.fromtimestamp(g.end, UTC),
                    "duration_text": duration_text(g.end - g.start),
                }
                for g in stretches
            ],
        }
        for name, stretches in gaps.items()
        if stretches
    ]
    return {
        "event": EVENT,
        "horizon_days": HORIZON_DAYS,
        "schedules": schedules,
        "recipient": recipient,
        "monitor": {"public_url": public_url, "name": "csp-monitor"},
        "now": datetime.fromtimestamp(now, UTC),
        "timezone": TIMEZONE,
    }


def sample_gap_context() -> OnCallGapContext:
    """A realistic context: the night rota has nobody on Christmas Eve."""
    start = datetime(2026, 12, 24, 12, 0, tzinfo=UTC).timestamp()
    gaps = {
        "primary": [Shift(start, start + 12 * 3600, None, None)],
        "emea": [Shift(start + 3600, start + 5 * 3600, None, None)],
    }
    zones = {"primary": "Asia/Shanghai", "emea": "Europe/London"}
    return gap_context(gaps, zones, start - 86400, "noc@example.cn")


def check_gap_templates(renderer: TemplateRenderer) -> list[TemplateProblem]:
    try:
        renderer.render(EVENT, sample_gap_context())
    except TemplateRenderError as exc:
        return [exc.problem]
    return []


def _render(renderer: TemplateRenderer, context: OnCallGapContext) -> RenderedParts:
    try:
        return renderer.render(EVENT, context)
    except TemplateRenderError:  # an operator's broken template must not lose the message
        names = ", ".join(s["name"] for s in context["schedules"])
        line = f"ON-CALL GAP: nobody on call in the next {HORIZON_DAYS} days: {names}"
        return RenderedParts(subject=line, text=line + "\n", html=None, sms=line, payload={})


def gap_messages(
    renderer: TemplateRenderer,
    catalog: Catalog,
    gaps: Mapping[str, Sequence[Shift]],
    zones: Mapping[str, str],
    now: float,
) -> list[RenderedMessage]:
    """One message per ops channel and recipient when a schedule has a gap; none when
    every schedule is covered (a daily "all good" would teach people to ignore it)."""
    if not any(gaps.values()):
        return []
    config = catalog.config
    day = clock.strftime("%Y%m%d", clock.gmtime(now))
    messages = []
    for channel in config.monitor.ops_channels:
        options = config.channels.get(channel)
        people = [str(p) for p in getattr(options, "to", None) or []]
        for person in people or [""]:
            context = gap_context(gaps, zones, now, person or channel, config.monitor.public_url)
            parts = _render(renderer, context)
            messages.append(
                RenderedMessage(
                    dedup_key=f"{EVENT}:{day}:{channel}" + (f":{person}" if person else ""),
                    channel=channel,
                    event=EVENT,
                    recipients=(person,) if person else (),
                    subject=parts.subject,
                    text=parts.text,
                    html=parts.html,
                    sms=parts.sms,
                    payload=parts.payload,
                )
            )
    return messages
