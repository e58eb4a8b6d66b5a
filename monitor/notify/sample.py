"""A realistic sample incident, for ``csp-monitor validate`` and the template tests.

Exchange Online's Outlook on the web answers 503 for Contoso (China) Ltd.; two
other customers of the reseller see the same failure, so it is a vendor-side
incident, and 21Vianet's service health already lists an issue. Each event
gets the incident as it would be when that message is sent: the timeline, the
escalation step, the acknowledgement and the resolution follow the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.notify.templates import (
    EVENTS,
    IncidentContext,
    OnCallContext,
    StepContext,
    TemplateContext,
    TimelineEntryContext,
    UnreachableContext,
)

# 07:12 Beijing time on 24 Nov is still 23 Nov in UTC: the sample shows both dates.
OPENED_AT = datetime(2025, 11, 23, 23, 12, 0, tzinfo=UTC)
INCIDENT_ID = "INC-20251123-0007"
PUBLIC_URL = "https://noc.example.cn/monitor"
OWA_REASON = "status 503 (expected 200, 302)"

# The customers of the vendor-side incident, and the minute each joined it.
_AFFECTED = {"Contoso (China) Ltd.": 0, "Fabrikam Shanghai Co.": 1, "上海蓝海贸易有限公司": 8}

# Minutes after the incident opened at which each event's message goes out.
_MINUTES_AT = {
    "opened": 0,
    "updated": 9,
    "escalated": 17,
    "voice_unavailable": 17,
    "acknowledged": 21,
    "severity": 31,
    "reminder": 47,
    "vendor_ticket": 62,
    "resolved": 84,
}
_STEPS = {
    "opened": StepContext(level=1, after_text="immediately", after_seconds=0.0),
    "escalated": StepContext(level=2, after_text="after 15 min", after_seconds=900.0),
    "voice_unavailable": StepContext(level=2, after_text="after 15 min", after_seconds=900.0),
    "vendor_ticket": StepContext(level=3, after_text="after 60 min", after_seconds=3600.0),
}


def _minutes_text(minutes: int) -> str:
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


_WANG = OnCallContext(level=1, schedule="primary", person="wang.wei", name="王伟 (Wang Wei)")
_LI = OnCallContext(level=2, schedule="primary", person="li.na", name="李娜 (Li Na)")
_NOTE = (
    "OWA answers 503 from China Telecom and China Unicom lines; EWS and SMTP still work; "
    "no change on our side or in the tenant since yesterday"
)


def _timeline(until: datetime) -> list[TimelineEntryContext]:
    """The sample incident's timeline as the engine records it (kinds and details), up to
    ``until``: templates word each entry in the message's language."""

    def at(seconds: float) -> datetime:
        return OPENED_AT + timedelta(seconds=seconds)

    entries: list[tuple[float, str, str | None, dict[str, Any], list[OnCallContext]]] = [
        (0, "opened", None, {"status": "down", "reason": OWA_REASON, "severity": "major",
                             "policy": "gold", "muted": False}, []),
        (1, "paged", None, {"level": 1, "channels": ["oncall-sms", "noc-email"],
                            "oncall": {"primary": "wang.wei"}}, [_WANG]),
        (60, "blast_radius", None, {"customers": 3, "previously": 1}, []),
        (5 * 60, "vendor_confirmed", None, {"issue_id": "EX1187342",
                                            "title": "Users may be unable to access Exchange "
                                            "Online through Outlook on the web"}, []),
        (15 * 60, "escalated", None, {"level": 2, "channels": ["oncall-sms", "noc-lead-sms"],
                                      "oncall": {"primary": "li.na"}}, [_LI]),
        (19 * 60, "note", "Li Wei (NOC)", {"text": _NOTE}, []),
        (21 * 60, "acknowledged", "Li Wei (NOC)", {}, []),
        (41 * 60, "ack_expired", None, {"previous_owner": "Li Wei (NOC)"}, []),
        (45 * 60, "reminder", None, {}, []),
        (60 * 60, "escalated", None, {"level": 3, "channels": ["vendor-desk-email"],
                                      "action": "vendor_ticket"}, []),
        (84 * 60, "resolved", None, {"note": "service recovered"}, []),
    ]  # fmt: skip
    return [
        TimelineEntryContext(
            at=at(seconds),
            kind=kind,
            text=kind
            + (f" by {actor}" if actor else "")
            + (": " + ", ".join(f"{k}={v}" for k, v in detail.items()) if detail else ""),
            actor=actor,
            detail=detail,
            oncall=oncall,
        )
        for seconds, kind, actor, detail, oncall in entries
        if at(seconds) <= until
    ]


def _incident(event: str, now: datetime) -> IncidentContext:
    minutes = _MINUTES_AT.get(event, 0)
    acknowledged = event == "acknowledged"
    resolved = event == "resolved"
    step = _STEPS.get(event)
    levels = {"opened": 1, "updated": 1, "escalated": 2, "acknowledged": 2, "reminder": 2}
    level = levels.get(event, 2 if event == "voice_unavailable" else 3)
    return IncidentContext(
        id=INCIDENT_ID,
        customer={
            "id": "contoso",
            "name": "Contoso (China) Ltd.",
            "tenant_domain": "contoso.partner.onmschina.cn",
            "tier": "gold",
            "contacts": [
                {
                    "name": "Wang Fang",
                    "role": "IT manager",
                    "email": "it-admin@contoso.com.cn",
                    "phone": "+8613800138000",
                }
            ],
        },
        service={"id": "exchange-online", "name": "Exchange Online (operated by 21Vianet)"},
        status="down",
        severity="critical" if event == "severity" else "major",
        state="resolved" if resolved else "acknowledged" if acknowledged else "open",
        opened_at=OPENED_AT,
        since_text=f"for {_minutes_text(max(minutes, 1))}",
        since_seconds=max(minutes, 1) * 60.0,
        reason=OWA_REASON,
        failing_checks=[]
        if resolved
        else [
            {
                "check": "owa",
                "type": "http",
                "status": "down",
                "reason": OWA_REASON,
                "since": OPENED_AT - timedelta(seconds=40),
            }
        ],
        escalation_level=level,
        step=step,
        acknowledged_by="Li Wei (NOC)" if acknowledged else None,
        acknowledged_at=OPENED_AT + timedelta(minutes=21) if acknowledged else None,
        resolved_at=now if resolved else None,
        duration_text=_minutes_text(minutes) if resolved else None,
        duration_seconds=minutes * 60.0 if resolved else None,
        flapping=False,
        muted=False,
        vendor_case=None,
        vendor={
            "confirmed": True,
            "issue_id": "EX1187342",
            "title": "Users may be unable to access Exchange Online through Outlook on the web",
            "latest_post": "We're reviewing service telemetry to isolate the cause of the impact.",
        },
        blast_radius=list(_AFFECTED),
        affected=[
            {
                "name": name,
                "duration_text": _minutes_text(max(minutes - offset, 1)),
                "seconds": max(minutes - offset, 1) * 60.0,
            }
            for name, offset in _AFFECTED.items()
        ],
        announced_customers=2 if event == "updated" else None,
        down_from=[],
        timeline=_timeline(now),
        # steps 1 and 2 paged schedule:primary: 王伟 when it opened, 李娜 after the midnight
        # handoff (step 3, the vendor desk, named no schedule)
        oncall=[_WANG, _LI],
    )


def sample_context(event: str = "opened", language: str = "en") -> TemplateContext:
    """A fresh template context for ``event`` (any of ``EVENTS``) in ``language``: safe to
    modify."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
    now = OPENED_AT + timedelta(minutes=_MINUTES_AT[event], seconds=20)
    return TemplateContext(
        event=event,
        incident=_incident(event, now),
        # Short on purpose: the link has to survive in a 2-segment Chinese SMS.
        ack_url=f"{PUBLIC_URL}/ack/7KQ2M9XW4T",
        incident_url=f"{PUBLIC_URL}/incidents/{INCIDENT_ID}",
        recipient="noc@example.cn" if event != "vendor_ticket" else "vendor-desk@example.cn",
        monitor={"public_url": PUBLIC_URL, "name": "csp-monitor"},
        now=now,
        timezone="Asia/Shanghai",
        language=language,
        unreachable=[
            UnreachableContext(
                callee="+8613800138000",
                skipped=[
                    "tencent-call: 1 of 1 calls between 22:00 and 08:00 (Asia/Shanghai) used",
                    "aliyun-call: 1 of 1 calls per 1 min used",
                ],
            )
        ]
        if event == "voice_unavailable"
        else [],
    )
