"""Which voice provider calls whom: the step's voice channels in order, within budgets.

A step lists its voice channels in order of preference (``notify: [tencent-call,
aliyun-call]``): each callee gets **one** call, from the first of them whose budget
for that number allows a call now (see :mod:`monitor.engine.voice_budget`); a
provider whose budget is spent is skipped, and the timeline says so
(``voice_failover``). When no voice channel may call a number, the timeline says
so (``voice_unavailable``) and the NOC lead (``monitor.ops_channels``) gets a
``voice_unavailable`` message naming who could not be called and why, so a person
picks up the phone instead.

Calls are counted in the store when they are queued, in the transaction that queues
them: the providers count failed calls too, and a restart or another node must see
them. Only pages that ask someone to act place calls (opened, escalated, reminder,
severity): an acknowledgement or a resolution is not worth waking anyone, and goes
by the step's other channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from monitor.channels.voice import VoiceOptions
from monitor.engine import incidents as engine
from monitor.engine.model import IncidentEvent
from monitor.engine.voice_budget import Refusal, check
from monitor.notify.message import RenderedMessage

log = logging.getLogger(__name__)

CALL_EVENTS = frozenset({"opened", "escalated", "reminder", "severity"})


class CallLog(Protocol):
    """The calls placed so far (a store transaction)."""

    async def voice_calls(self, channel: str, callee: str, since: float) -> list[float]: ...

    async def queued(self, dedup_key: str) -> bool: ...

    async def record_voice_call(
        self, channel: str, callee: str, at: float, incident_id: str | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A number no voice channel of the step may call now, and each channel's reason."""

    callee: str
    refusals: tuple[tuple[str, Refusal], ...]  # (channel, why)


NoticeMessages = Callable[[engine.Page, Sequence[Unreachable]], list[RenderedMessage]]


def _callee(message: RenderedMessage) -> str:
    return message.recipients[0] if len(message.recipients) == 1 else ""


async def plan_calls(
    messages: Sequence[RenderedMessage],
    decision: engine.Decision,
    channels: Mapping[str, object],
    calls: CallLog,
    at: float,
    notices: NoticeMessages,
) -> list[RenderedMessage]:
    """``messages`` with each page's voice messages reduced to one call per callee
    (recorded in ``calls``), timeline events added to ``decision``, and the NOC lead's
    notices for the numbers nobody may call."""
    voice = {name: o for name, o in channels.items() if isinstance(o, VoiceOptions)}
    if not any(m.channel in voice for m in messages):
        return list(messages)
    planned = [m for m in messages if m.channel not in voice]
    for page in decision.pages:
        prefix = f"{page.dedup_key}:"
        mine = [m for m in messages if m.channel in voice and m.dedup_key.startswith(prefix)]
        if not mine:
            continue
        if page.event not in CALL_EVENTS:
            log.info(
                "event=voice_skipped incident=%s page=%s reason=%r", page.incident.id,
                page.event, "voice calls only ask people to act; this page goes by the "
                "step's other channels",
            )  # fmt: skip
            continue
        by_callee: dict[str, list[RenderedMessage]] = {}
        order = {name: i for i, name in enumerate(page.channels)}
        for message in sorted(mine, key=lambda m: order.get(m.channel, len(order))):
            by_callee.setdefault(_callee(message), []).append(message)
        unreachable: list[Unreachable] = []
        for callee, candidates in by_callee.items():
            if already := [m for m in candidates if await calls.queued(m.dedup_key)]:
                # The page was decided before (a retried write, a restart): its call is
                # queued; deciding again must neither count nor place a second one.
                planned += already
                continue
            chosen, refusals = await _first_allowed(candidates, voice, calls, at)
            if chosen is not None:
                await calls.record_voice_call(chosen.channel, callee, at, page.incident.id)
                planned.append(chosen)
                if refusals:
                    _event(decision, page, at, "voice_failover", callee, refusals, chosen.channel)
                continue
            unreachable.append(Unreachable(callee, tuple(refusals)))
            _event(decision, page, at, "voice_unavailable", callee, refusals, None)
        if unreachable:
            planned += notices(page, unreachable)
    return planned


async def _first_allowed(
    candidates: Sequence[RenderedMessage],
    voice: Mapping[str, VoiceOptions],
    calls: CallLog,
    at: float,
) -> tuple[RenderedMessage | None, list[tuple[str, Refusal]]]:
    refusals: list[tuple[str, Refusal]] = []
    for message in candidates:
        budget = voice[message.channel].call_budget()
        callee = _callee(message)
        placed = await calls.voice_calls(message.channel, callee, at - budget.memory)
        refusal = check(budget, placed, at)
        if refusal is None:
            return message, refusals
        refusals.append((message.channel, refusal))
    return None, refusals


def _event(
    decision: engine.Decision,
    page: engine.Page,
    at: float,
    kind: str,
    callee: str,
    refusals: Sequence[tuple[str, Refusal]],
    called_by: str | None,
) -> None:
    """A timeline entry: who could not be called by which channel, and why."""
    skipped = [f"{channel}: {refusal.reason}" for channel, refusal in refusals]
    detail: dict[str, object] = {"callee": callee, "step": page.incident.escalation_level,
                                 "skipped": skipped}  # fmt: skip
    if called_by:
        detail["called_by"] = called_by
    decision.events.append(IncidentEvent(page.incident.id, at, kind, detail, None))
    log.warning(
        "event=%s incident=%s callee=%s called_by=%s skipped=%r action=%r",
        kind, page.incident.id, callee, called_by or "-", "; ".join(skipped),
        "none: another provider called" if called_by else
        "call the on-call engineer yourself; raise the provider's limits if this recurs",
    )  # fmt: skip
