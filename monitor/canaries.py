"""The canaries: this node's own view of the world, and what follows when it has none.

:class:`SightKeeper` runs the canary rounds (``monitor.canaries``) on their own
schedule, keeps the verdict (``sight.Sight``) and acts on it:

* **blind**: every probe result of this node is recorded as ``unknown``
  ("monitor blind: …"), so no incident opens or resolves from it and the SLA
  time is a coverage gap; open incidents stay as they are; one ``blind``
  message goes to ``monitor.ops_channels`` through the outbox (retried,
  surviving a restart), and its ``sight_restored`` when the canaries pass again;
* **pending** (a burst of network failures asked for a round, or a round failed
  but blindness is not confirmed yet): a result that would confirm a target
  ``down`` for a network-class reason is held back until the verdict; then it
  is applied as it was (the canaries see: the outage is real and pages) or as
  ``unknown`` (the node is blind).

The daemon passes every probe result through :meth:`SightKeeper.admit` before
its status pipeline. Without canaries nothing is held and nobody goes blind;
local failures (``local_failures.py``) are ``unknown`` either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from checks import check_types
from monitor.catalog import Catalog, TargetSpec
from monitor.notify.templates import TemplateRenderer
from monitor.ops_messages import episode_id, episode_since, ops_messages
from monitor.probe import ProbeContext, ProbeResult, Status
from monitor.runner import run_probe
from monitor.sight import CanaryOutcome, Sight, SightChange, SightSettings
from monitor.status import StatusBoard, TargetState, observe
from monitor.store import Store

log = logging.getLogger(__name__)

Release = Callable[[TargetSpec, ProbeResult], None]


class SightMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blind = Gauge(
            "csp_monitor_blind",
            "1 while this node is blind (most canaries fail): its results are unknown",
            registry=registry,
        )
        self.canary_success = Gauge(
            "csp_monitor_canary_success",
            "1 if the canary succeeded in the last round",
            ["canary"],
            registry=registry,
        )
        self.local_failures = Counter(
            "csp_monitor_local_failures",
            "Probe results recorded unknown because the failure was this host's "
            "(file descriptors, buffers, resolver, route)",
            registry=registry,
        )
        self.blind_results = Counter(
            "csp_monitor_blind_results",
            "Probe results recorded unknown because this node was blind",
            registry=registry,
        )
        self.held = Counter(
            "csp_monitor_held_confirmations",
            "Confirmations to down held for the canaries' verdict, by outcome "
            "(down: the canaries saw; unknown: the node was blind)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("down", "unknown"):
            self.held.labels(outcome)


def _would_confirm_down(state: TargetState, spec: TargetSpec, result: ProbeResult) -> bool:
    """Would this result make the target ``down``? Asked of a copy: the state is untouched."""
    trial = dataclasses.replace(state)
    transition = observe(trial, spec.target.id, result, spec.timing, 0.0)
    return transition is not None and transition.current is Status.DOWN


class SightKeeper:
    def __init__(
        self,
        registry: CollectorRegistry,
        wall: Callable[[], float] = time.time,
        node: str | None = None,
    ) -> None:
        self.metrics = SightMetrics(registry)
        self.sight = Sight()
        self.node = node or socket.gethostname()
        self._wall = wall
        self._catalog: Catalog | None = None
        self._renderer: TemplateRenderer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._store: Store | None = None
        self._wake_notifier: Callable[[], None] = lambda: None
        self._release: Release = lambda spec, result: None
        self._board: StatusBoard | None = None
        self._held: dict[str, tuple[TargetSpec, ProbeResult]] = {}
        self._episode: str | None = None
        self._blind_since: float | None = None
        self._resumed = False  # a blindness announced by an earlier run, not yet resolved
        self._round_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        catalog: Catalog,
        renderer: TemplateRenderer,
        http: aiohttp.ClientSession,
        store: Store | None,
        wake_notifier: Callable[[], None],
        board: StatusBoard,
        release: Release,
    ) -> None:
        """Start the canary rounds (none without canaries)."""
        self._http, self._store, self._wake_notifier = http, store, wake_notifier
        self.bind(board, release)
        self.configure(catalog, renderer)
        try:  # before the rounds start: a store read is never cut short by a quick stop
            await self._resume()
        except Exception:  # the store may be down: at worst a second message
            log.exception("event=blind_resume_failed")
        self._task = asyncio.create_task(self._rounds(), name="canaries")

    def bind(self, board: StatusBoard, release: Release) -> None:
        """Where held results go once the verdict is in (the daemon's status pipeline)."""
        self._board, self._release = board, release

    def configure(self, catalog: Catalog, renderer: TemplateRenderer) -> None:
        """A (re)loaded config: its canaries, settings, channels and templates."""
        self._catalog, self._renderer = catalog, renderer
        settings = catalog.config.monitor.blindness
        self.sight.settings = SightSettings(
            settings.rounds, settings.burst_services, settings.burst_window
        )
        names = {target.check for target, _options, _timeout in catalog.canaries}
        for outcome in self.sight.last_outcomes:
            if outcome.name not in names:
                self.metrics.canary_success.remove(outcome.name)
        self.sight.last_outcomes = [o for o in self.sight.last_outcomes if o.name in names]
        self._round_now.set()  # new canaries: a verdict from them, now

    async def close(self) -> None:
        """Let the round in progress end (its probes have timeouts), then stop; cancelled
        only if it overruns: a store write cut short would hold its connection."""
        self._stop.set()
        self._round_now.set()
        if self._task is None:
            return
        catalog = self._catalog
        longest = max((limit for *_, limit in catalog.canaries), default=0.0) if catalog else 0.0
        _, pending = await asyncio.wait([self._task], timeout=longest + 2.0)
        if pending:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)

    # ------------------------------------------------------------------ probe results

    def admit(
        self, spec: TargetSpec, result: ProbeResult, state: TargetState
    ) -> ProbeResult | None:
        """The result the status pipeline gets, or None while it is held for a verdict."""
        if result.local_failure:
            self.metrics.local_failures.inc()
        catalog = self._catalog
        if catalog is None or not catalog.canaries:
            return result
        if self.sight.blind:
            self.metrics.blind_results.inc()
            return self._as_blind(spec, result, state)
        target_id = spec.target.id
        if result.network_failure and not result.success:
            # a target already confirmed down tells nothing new: only fresh failures burst;
            # local failures count (out of descriptors, the canaries fail too: blind)
            if state.status is not Status.DOWN and self.sight.failure_seen(
                spec.target.service, self._wall()
            ):
                log.warning(
                    "event=failure_burst services=%d window_seconds=%g action=%r",
                    self.sight.settings.burst_services,
                    self.sight.settings.burst_window,
                    "running the canaries now",
                )
                self._round_now.set()
            if self.sight.pending() and _would_confirm_down(state, spec, result):
                if target_id not in self._held:
                    log.info(
                        "event=confirmation_held target=%s reason=%r until=%r",
                        target_id,
                        result.reason,
                        "the canaries' verdict",
                    )
                self._held[target_id] = (spec, result)
                return None
        self._held.pop(target_id, None)
        return result

    def _as_blind(self, spec: TargetSpec, result: ProbeResult, state: TargetState) -> ProbeResult:
        # One blind result makes the target unknown at once (as if the threshold of
        # results that cannot judge were met): the coverage gap starts with the blindness.
        state.plugin_errors = max(state.plugin_errors, spec.timing.failure_threshold - 1)
        return ProbeResult(
            success=False,
            inconclusive=True,
            reason=f"monitor blind: {self._canary_reasons()}",
            duration=result.duration,
            started_at=result.started_at,
        )

    def _canary_reasons(self) -> str:
        failing = self.sight.failing_canaries
        return "; ".join(f"{o.name}: {o.reason}" for o in failing) or "canaries failing"

    def _settle_held(self) -> None:
        """Apply what was held once the verdict is in: as it was, or as unknown."""
        if self.sight.pending() or not self._held:
            return
        held, self._held = self._held, {}
        outcome = "unknown" if self.sight.blind else "down"
        for spec, result in held.values():
            self.metrics.held.labels(outcome).inc()
            if self.sight.blind:
                assert self._board is not None
                state = self._board.target(spec.target.id, self._wall())
                result = self._as_blind(spec, result, state)
            self._release(spec, result)
        log.info("event=held_confirmations_applied count=%d as=%s", len(held), outcome)

    def _blind_everything(self) -> None:
        """From the moment the node is blind, every target is unknown (not at its next probe)."""
        catalog, board = self._catalog, self._board
        if catalog is None or board is None:
            return
        now = self._wall()
        for target_id, spec in catalog.targets.items():
            if target_id in self._held:
                continue  # settled just after, counted as held
            state = board.target(target_id, now)
            if state.status is Status.UNKNOWN:
                continue
            empty = ProbeResult(success=False, started_at=now)
            self._release(spec, self._as_blind(spec, empty, state))

    # ------------------------------------------------------------------ rounds

    async def _resume(self) -> None:
        """A blindness an earlier run of this node announced and never resolved goes on:
        no second ``blind`` message, and its ``sight_restored`` is still owed."""
        if self._store is None:
            return
        for row in await self._store.latest_outbox(["blind", "sight_restored"]):
            episode = row.message.incident_id or ""
            since = episode_since(episode)
            if since is None or episode_id(self.node, since) != episode:
                continue  # another node's
            if row.message.event == "blind":
                self._episode, self._blind_since, self._resumed = episode, since, True
                log.warning("event=monitor_blind_resumed node=%s episode=%s", self.node, episode)
            return

    async def _rounds(self) -> None:
        while not self._stop.is_set():
            started = self._wall()
            self._round_now.clear()
            try:
                outcomes = await self.run_round()
                await self.verdict(outcomes, started)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive one bad round
                log.exception("event=canary_round_failed")
            await self._wait(self._next_delay(started))

    def _next_delay(self, started: float) -> float:
        catalog = self._catalog
        if catalog is None:
            return 30.0
        settings = catalog.config.monitor.blindness
        burst = self.sight.burst_since
        if burst is not None and started < burst:
            return 0.0  # a burst came during the round: it needs a round of its own
        changing = (
            self.sight.failing_rounds > 0
            if not self.sight.blind
            else (self.sight.passing_rounds > 0)
        )
        return settings.retry_interval if changing else settings.interval

    async def _wait(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._round_now.wait()
        except TimeoutError:
            pass

    async def run_round(self) -> list[CanaryOutcome]:
        """Every canary once, at the same time."""
        catalog, http = self._catalog, self._http
        if catalog is None or http is None or not catalog.canaries:
            return []
        types = check_types()

        async def one(target: Any, options: Any, limit: float) -> CanaryOutcome:
            context = ProbeContext(http=http, timeout=limit, wall=self._wall)
            result = await run_probe(types[target.type], target, options, context)
            return CanaryOutcome(target.check, result.success, result.reason)

        outcomes = list(await asyncio.gather(*(one(*canary) for canary in catalog.canaries)))
        for outcome in outcomes:
            self.metrics.canary_success.labels(outcome.name).set(1 if outcome.success else 0)
        return outcomes

    async def verdict(self, outcomes: list[CanaryOutcome], started: float) -> None:
        """Act on a round that started at ``started``: the verdict, held results, messages."""
        was_failing = self.sight.failing_rounds
        if self._catalog is not None and not self._catalog.canaries:
            change = self.sight.without_canaries()  # a reload removed them
            self.metrics.blind.set(0)
            self._settle_held()
            if change is not None:
                await self._announce(change, outcomes)
            return
        change = self.sight.round_finished(outcomes, started)
        failing = [o for o in outcomes if not o.success]
        newly_failing = self.sight.failing_rounds > was_failing and not self.sight.blind
        if failing and change is None and newly_failing:
            log.warning(
                "event=canaries_failing node=%s failing=%d of=%d rounds=%d canaries=%r",
                self.node,
                len(failing),
                len(outcomes),
                self.sight.failing_rounds,
                self._canary_reasons(),
            )
        self.metrics.blind.set(1 if self.sight.blind else 0)
        if change is SightChange.BLIND:
            self._blind_everything()
        self._settle_held()
        if self._resumed:  # the verdict on a blindness announced before a restart
            if change is SightChange.BLIND:
                self._resumed = False
                log.error(
                    "event=monitor_blind node=%s since=%.0f canaries=%r announced=%r",
                    self.node,
                    self._blind_since or 0.0,
                    self._canary_reasons(),
                    "before the restart",
                )
                return
            rounds = self.sight.settings.rounds
            if not self.sight.blind and self.sight.passing_rounds >= rounds:
                self._resumed = False
                change = SightChange.SIGHT_RESTORED
        if change is not None:
            await self._announce(change, outcomes)

    async def _announce(self, change: SightChange, outcomes: list[CanaryOutcome]) -> None:
        """Log, audit and queue the ops message of a change of sight."""
        now = self._wall()
        if change is SightChange.BLIND:
            since = self.sight.blind_since if self.sight.blind_since is not None else now
            self._episode = episode_id(self.node, since)
            self._blind_since = since
            log.error(
                "event=monitor_blind node=%s since=%.0f canaries=%r action=%r",
                self.node,
                since,
                self._canary_reasons(),
                "check this host's network, resolver and file descriptors; "
                "its results are unknown until the canaries pass",
            )
            until = None
        else:
            since = self._blind_since if self._blind_since is not None else now
            until = now
            log.warning(
                "event=monitor_sight_restored node=%s blind_seconds=%.0f", self.node, now - since
            )
        episode = self._episode or episode_id(self.node, since)
        catalog, renderer, store = self._catalog, self._renderer, self._store
        if catalog is None or renderer is None or store is None:
            return
        messages = ops_messages(
            renderer, catalog, change.value, episode, self.node, since, until, outcomes, now
        )
        if not messages:
            log.warning(
                "event=ops_not_notified change=%s action=%r",
                change.value,
                "set monitor.ops_channels to be told",
            )
        try:
            async with store.transaction() as tx:
                if messages:
                    await tx.enqueue(messages, now)
                await tx.audit(
                    now,
                    "monitor",
                    self.node,
                    None,
                    event=change.value,
                    episode=episode,
                    since=since,
                    canaries=[
                        {"name": o.name, "ok": o.success, "reason": o.reason} for o in outcomes
                    ],
                )
        except Exception:
            log.exception("event=ops_message_failed change=%s", change.value)
            return
        if messages:
            self._wake_notifier()
