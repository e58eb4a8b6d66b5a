"""``csp-monitor simulate``: live through a scripted outage in a second.

A scenario names which checks fail when and who acknowledges when. It is
replayed through the real thresholds, incident manager, templates and outbox
(in a throw-away SQLite store) with a fake clock, and every incident change
and every message that would be sent — to whom, when — is printed. Operators
use it to try an escalation policy before trusting it with a real outage.

Scenario file::

    start: 2026-11-23T09:00:00+08:00   # optional, default: now
    duration: 3h
    events:
      - {at: 5m, target: contoso/exchange-online/owa, fail: "status 503 (expected 200)"}
      - {at: 7m, target: contoso/exchange-online/owa, slow: 3.5}      # degraded
      - {at: 40m, acknowledge: contoso/exchange-online, by: li.wei}
      - {at: 2h, target: contoso/exchange-online/owa, ok: true}
      - {at: 2h30m, resolve: contoso/exchange-online, by: li.wei, note: "vendor fixed"}
"""

from __future__ import annotations

import heapq
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from pydantic import Field, ValidationError, model_validator

from monitor.alerting import renderer_for
from monitor.catalog import Catalog
from monitor.config import ConfigError, ConfigIssue, issues_from_validation, read_yaml
from monitor.config_types import Delay, Duration, StrictModel
from monitor.engine.model import IncidentError
from monitor.incident_manager import IncidentManager
from monitor.links import LinkSigner
from monitor.notify.message import DeliveryReceipt, RenderedMessage
from monitor.notify.notifier import Notifier, NotifierMetrics
from monitor.probe import ProbeResult
from monitor.status import StatusBoard, observe
from monitor.store import Store
from monitor.timezones import TimeZoneName


class ScenarioEvent(StrictModel):
    at: Delay = Field(description="Time since the start")
    target: str | None = Field(None, description="customer/service/check")
    fail: str | None = Field(None, description="The check fails with this reason")
    slow: float | None = Field(None, description="The check succeeds in this many seconds")
    ok: bool | None = Field(None, description="The check works again")
    acknowledge: str | None = Field(None, description="customer/service of the incident")
    resolve: str | None = Field(None, description="customer/service of the incident")
    by: str = "operator"
    note: str = ""

    @model_validator(mode="after")
    def _one_action(self) -> ScenarioEvent:
        probe = sum(x is not None for x in (self.fail, self.slow, self.ok))
        actions = sum(x is not None for x in (self.acknowledge, self.resolve))
        if self.target is not None and probe != 1:
            raise ValueError("a target event needs exactly one of fail, slow, ok")
        if self.target is None and (probe or actions != 1):
            raise ValueError("give a target with fail/slow/ok, or acknowledge/resolve")
        return self


class Scenario(StrictModel):
    start: datetime | None = None
    duration: Duration = 3 * 3600.0
    timezone: TimeZoneName = "Asia/Shanghai"
    events: list[ScenarioEvent]


def load_scenario(path: Path) -> Scenario:
    raw = read_yaml(path.read_text(encoding="utf-8"), str(path))
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, Scenario), str(path)) from None


@dataclass
class Recorder:
    """A channel that delivers into the printed timeline instead of the world."""

    name: str
    clock: Callable[[], float]
    lines: list[tuple[float, int, str]] = field(default_factory=list)

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        who = ", ".join(message.recipients) or "(channel's recipients)"
        self.lines.append(
            (
                self.clock(),
                1,
                f"SEND   {message.channel:<16} {message.event:<13} to {who}: {message.subject}",
            )
        )
        return DeliveryReceipt(None)


@dataclass
class FakeClock:
    now: float

    def __call__(self) -> float:
        return self.now


def _find(catalog: Catalog, path: str, parts: int) -> tuple[str, ...]:
    pieces = tuple(path.split("/"))
    if len(pieces) != parts:
        raise ConfigError(
            [ConfigIssue("events", f"{path!r}: expected {parts} parts separated by /")], "scenario"
        )
    return pieces


async def simulate(catalog: Catalog, scenario: Scenario, base: Path) -> list[str]:
    """Replay ``scenario``; return the printed timeline."""
    start = scenario.start.timestamp() if scenario.start else time.time()
    clock = FakeClock(start)
    zone = ZoneInfo(scenario.timezone)
    with tempfile.TemporaryDirectory(prefix="csp-monitor-simulate-") as scratch:
        store = await Store.open(f"sqlite:///{Path(scratch) / 'simulate.db'}")
        try:
            return await _run(catalog, scenario, base, store, clock, zone, Path(scratch))
        finally:
            await store.close()


async def _run(
    catalog: Catalog,
    scenario: Scenario,
    base: Path,
    store: Store,
    clock: FakeClock,
    zone: ZoneInfo,
    scratch: Path,
) -> list[str]:
    board = StatusBoard()
    lines: list[tuple[float, int, str]] = []
    recorders = {name: Recorder(name, clock) for name in catalog.config.channels}
    notifier = Notifier(store, recorders, NotifierMetrics(CollectorRegistry()), wall=clock)
    manager = IncidentManager(
        store,
        renderer_for(catalog, base),
        LinkSigner(b"s" * 32),
        failing_checks=lambda c, s: [],
        wall=clock,
    )
    manager.configure(catalog)
    await manager.start(clock.now)
    start = clock.now
    behaviour: dict[str, ProbeResult] = {}
    queue: list[tuple[float, int, str]] = []  # (time, order, target id)
    for order, target_id in enumerate(sorted(catalog.targets)):
        heapq.heappush(queue, (start, order, target_id))
    events = sorted(scenario.events, key=lambda e: e.at)
    tick_every = catalog.config.incidents.tick_interval
    next_tick = start
    end = start + scenario.duration
    for bound in range(10_000_000):  # bounded: a scenario is a finite replay
        if bound and not queue:
            break
        due = min(queue[0][0] if queue else end, next_tick, start + events[0].at if events else end)
        if due > end:
            break
        clock.now = due
        while events and start + events[0].at <= due:
            await _scripted(events.pop(0), catalog, manager, behaviour, lines, clock)
        if next_tick <= due:
            await manager.tick(due)
            await notifier.deliver_due()
            next_tick = due + tick_every
        while queue and queue[0][0] <= due:
            _, order, target_id = heapq.heappop(queue)
            spec = catalog.targets[target_id]
            result = behaviour.get(target_id, ProbeResult(success=True, duration=0.1))
            state = board.target(target_id, due)
            transition = observe(state, target_id, result, spec.timing, due)
            if transition is not None:
                key = (spec.target.customer, spec.target.service)
                subscription = catalog.subscriptions[key]
                change = board.update_subscription(
                    key, subscription.target_ids, subscription.aggregate, transition.at
                )
                lines.append(
                    (
                        due,
                        0,
                        f"STATUS {target_id} {transition.previous} → "
                        f"{transition.current} ({transition.reason or 'ok'})",
                    )
                )
                if change is not None:
                    await manager.status_changed(
                        *key,
                        change[0],
                        change[1],
                        board.subscriptions[key].reason,
                        due,
                        since=board.subscriptions[key].since,
                    )
                    await notifier.deliver_due()
            interval = spec.timing.retry_interval if state.pending else spec.timing.interval
            heapq.heappush(queue, (due + interval, order, target_id))
    for recorder in recorders.values():
        lines.extend(recorder.lines)
    for incident in await store.list_incidents(limit=1000):
        for event in await store.events(incident.id):
            detail = ", ".join(f"{k}={v}" for k, v in event.detail.items() if v not in (None, ""))
            who = f" by {event.actor}" if event.actor else ""
            lines.append(
                (
                    event.at,
                    0,
                    f"INCIDENT {incident.id} {incident.customer}/"
                    f"{incident.service} {event.kind}{who}" + (f": {detail}" if detail else ""),
                )
            )
    return [
        f"{datetime.fromtimestamp(at, zone):%m-%d %H:%M:%S}  +{_offset(at - start)}  {text}"
        for at, _, text in sorted(lines, key=lambda line: (line[0], line[1]))
    ]


def _offset(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


async def _scripted(
    event: ScenarioEvent,
    catalog: Catalog,
    manager: IncidentManager,
    behaviour: dict[str, ProbeResult],
    lines: list[tuple[float, int, str]],
    clock: FakeClock,
) -> None:
    if event.target is not None:
        if event.target not in catalog.targets:
            raise ConfigError(
                [
                    ConfigIssue(
                        "events", f"unknown target {event.target!r} (customer/service/check)"
                    )
                ],
                "scenario",
            )
        if event.fail is not None:
            behaviour[event.target] = ProbeResult(success=False, reason=event.fail, duration=1)
        elif event.slow is not None:
            spec = catalog.targets[event.target]
            limit = spec.timing.degraded_latency
            slow = limit is not None and event.slow > limit
            behaviour[event.target] = ProbeResult(
                success=True,
                duration=event.slow,
                degraded=slow,
                reason=f"slow: {event.slow:g}s > {limit:g}s" if slow and limit else "",
            )
        else:
            behaviour.pop(event.target, None)
        what = event.fail or (f"slow {event.slow:g}s" if event.slow is not None else "ok")
        lines.append((clock.now, 0, f"SCRIPT {event.target}: {what}"))
        return
    subject = event.acknowledge or event.resolve or ""
    customer, service = _find(catalog, subject, 2)
    found = [i for i in manager.open_incidents() if (i.customer, i.service) == (customer, service)]
    if not found:
        lines.append(
            (
                clock.now,
                0,
                f"SCRIPT {subject}: no open incident to "
                f"{'acknowledge' if event.acknowledge else 'resolve'}",
            )
        )
        return
    try:
        if event.acknowledge:
            await manager.acknowledge(found[0].id, event.by, clock.now)
        else:
            await manager.resolve(found[0].id, event.by, event.note, clock.now)
    except IncidentError as exc:
        lines.append((clock.now, 0, f"SCRIPT {subject}: {exc}"))


__all__ = ["Scenario", "load_scenario", "simulate"]
