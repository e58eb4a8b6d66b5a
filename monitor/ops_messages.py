"""Messages about the monitor itself, for its operators: ``blind`` and ``sight_restored``.

They concern no customer and no incident, so they have a context of their own
(:class:`OpsContext`), rendered by the same renderer from
``alert_templates/<event>/`` and queued in the same outbox as pages (so they
survive a restart and are retried). ``csp-monitor validate`` renders them with
:func:`sample_ops_context`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from monitor.catalog import Catalog
from monitor.notify.message import RenderedMessage
from monitor.notify.templates import (
    RenderedParts,
    TemplateProblem,
    TemplateRenderer,
    TemplateRenderError,
)
from monitor.sight import CanaryOutcome

OPS_EVENTS = ("blind", "sight_restored")
TIMEZONE = "Asia/Shanghai"  # as the incident messages show it next to UTC


class CanaryContext(TypedDict):
    name: str  # "resolver-alidns"
    type: str  # "dns"
    success: bool
    reason: str  # why it failed, "" when it succeeded


class OpsMonitorContext(TypedDict):
    public_url: str | None
    name: str


class OpsContext(TypedDict):
    """Everything an ops template may use."""

    event: str  # blind, sight_restored
    node: str  # the node that cannot see, e.g. its host name
    since: datetime  # aware: when the blindness began (its first failing round)
    until: datetime | None  # when sight came back (sight_restored), else None
    duration_text: str | None  # "12 min" (sight_restored), else None
    canaries: list[CanaryContext]  # the last round
    recipient: str
    monitor: OpsMonitorContext
    now: datetime  # aware
    timezone: str


def duration_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def ops_context(
    event: str,
    node: str,
    since: float,
    until: float | None,
    outcomes: Sequence[CanaryOutcome],
    types: dict[str, str],
    now: float,
    recipient: str = "",
    public_url: str | None = None,
) -> OpsContext:
    return OpsContext(
        event=event,
        node=node,
        since=datetime.fromtimestamp(since, UTC),
        until=datetime.fromtimestamp(until, UTC) if until is not None else None,
        duration_text=duration_text(until - since) if until is not None else None,
        canaries=[
            CanaryContext(
                name=o.name, type=types.get(o.name, ""), success=o.success, reason=o.reason
            )
            for o in outcomes
        ],
        recipient=recipient,
        monitor={"public_url": public_url, "name": "csp-monitor"},
        now=datetime.fromtimestamp(now, UTC),
        timezone=TIMEZONE,
    )


def sample_ops_context(event: str) -> OpsContext:
    """A realistic context: the resolvers fail, the partner's gateway still answers."""
    since = datetime(2025, 11, 23, 23, 12, tzinfo=UTC).timestamp()
    until = since + 17 * 60 if event == "sight_restored" else None
    outcomes = [
        CanaryOutcome("system-resolver", False, "the system resolver did not answer"),
        CanaryOutcome("alidns", False, "timeout after 5s"),
        CanaryOutcome("gateway", True, ""),
    ]
    types = {"system-resolver": "dns", "alidns": "dns", "gateway": "tcp"}
    now = (until or since) + 20
    return ops_context(
        event, "noc-sh-01", since, until, outcomes, types, now, "noc@example.cn", None
    )


def check_ops_templates(renderer: TemplateRenderer) -> list[TemplateProblem]:
    """Every ops event rendered with the sample: the problems found."""
    problems: list[TemplateProblem] = []
    for event in OPS_EVENTS:
        try:
            renderer.render(event, sample_ops_context(event))
        except TemplateRenderError as exc:
            problems.append(exc.problem)
    return problems


def _render(renderer: TemplateRenderer, event: str, context: OpsContext) -> RenderedParts:
    try:
        return renderer.render(event, context)
    except TemplateRenderError:  # an operator's broken template must not lose the message
        line = f"{event.upper()}: monitoring node {context['node']}"
        return RenderedParts(subject=line, text=line + "\n", html=None, sms=line, payload={})


def ops_messages(
    renderer: TemplateRenderer,
    catalog: Catalog,
    event: str,
    episode: str,
    node: str,
    since: float,
    until: float | None,
    outcomes: Sequence[CanaryOutcome],
    now: float,
) -> list[RenderedMessage]:
    """One message per ops channel and recipient; ``episode`` names the blindness (its
    messages share it, so ``sight_restored`` never overtakes ``blind``)."""
    config = catalog.config
    types = {target.check: target.type for target, _options, _timeout in catalog.canaries}
    messages = []
    for channel in config.monitor.ops_channels:
        options = config.channels.get(channel)
        people = [str(p) for p in getattr(options, "to", None) or []]
        for person in people or [""]:
            context = ops_context(
                event,
                node,
                since,
                until,
                outcomes,
                types,
                now,
                person or channel,
                config.monitor.public_url,
            )
            parts = _render(renderer, event, context)
            messages.append(
                RenderedMessage(
                    dedup_key=f"{episode}:{event}:{channel}" + (f":{person}" if person else ""),
                    channel=channel,
                    event=event,
                    recipients=(person,) if person else (),
                    subject=parts.subject,
                    text=parts.text,
                    html=parts.html,
                    sms=parts.sms,
                    payload=parts.payload,
                    incident_id=episode,
                )
            )
    return messages


def episode_since(episode: str) -> float | None:
    """The start time an :func:`episode_id` carries, or None for another kind of id."""
    if not episode.startswith("BLIND-"):
        return None
    try:
        moment = datetime.strptime(episode[6:21], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def episode_id(node: str, since: float) -> str:
    """``BLIND-20251123T231200-noc-sh-01`` (at most 40 characters: the outbox's column)."""
    stamp = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=since)).strftime("%Y%m%dT%H%M%S")
    return f"BLIND-{stamp}-{node}"[:40]
