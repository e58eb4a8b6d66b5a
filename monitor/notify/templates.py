"""Notification templates: the context they get, and the one renderer.

Templates live in ``alert_templates/<event>/<format>`` (Jinja2). The renderer
searches a list of directories, the operator's first and the built-in
``alert_templates/`` last, so an operator overrides a single file (one event's
SMS, the HTML layout) and inherits the rest.

Templates are code written by operators, so they run in an immutable sandbox
(no ``''.__class__.__mro__`` escapes, no mutating the context), with
``StrictUndefined`` (a typo is an error with the file and line, not an empty
string in a page) and autoescaping for ``.html`` templates only (an SMS must
not say ``&amp;``). ``csp-monitor validate`` renders every event and format
against a sample incident (``sample.py``) through :meth:`TemplateRenderer.check_all`.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from monitor.notify.sms import clean_for_sms, fit, is_gsm

BUILTIN_TEMPLATES = Path(__file__).resolve().parents[2] / "alert_templates"

EVENTS = (
    "opened",
    "escalated",
    "severity",
    "reminder",
    "acknowledged",
    "updated",
    "resolved",
    "vendor_ticket",
    "voice_unavailable",
)
SUBJECT, TEXT, HTML, SMS, WEBHOOK, CHAT, VOICE = (
    "subject.txt.j2",
    "body.txt.j2",
    "body.html.j2",
    "sms.txt.j2",
    "webhook.json.j2",
    "chat.md.j2",
    "voice.txt.j2",
)
FORMATS = (SUBJECT, TEXT, HTML, SMS, WEBHOOK, CHAT, VOICE)
REQUIRED_FORMATS = (SUBJECT, TEXT)  # the others may be absent
# Formats people read (or hear): each has a template per language. The webhook JSON is
# for machines and has one.
WORDED_FORMATS = (SUBJECT, TEXT, HTML, SMS, CHAT, VOICE)
LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BLANK_LINES = re.compile(r"\n{3,}")


# ------------------------------------------------------------------------------ context


class ContactContext(TypedDict):
    name: str
    role: str | None
    email: str | None
    phone: str | None


class CustomerContext(TypedDict):
    id: str
    name: str
    tenant_domain: str
    tier: str
    contacts: list[ContactContext]


class ServiceContext(TypedDict):
    id: str
    name: str  # e.g. "Exchange Online (operated by 21Vianet)"


class FailingCheckContext(TypedDict):
    check: str  # the check's name in the service, e.g. "owa"
    type: str  # its check type, e.g. "http"
    status: str  # down or degraded
    reason: str  # the probe's reason, e.g. "status 503 (expected 200, 302)"
    since: datetime  # aware


class StepContext(TypedDict):
    level: int  # 1-based escalation step being notified
    after_text: str  # "immediately", "after 15 min"
    after_seconds: float  # 900.0 (for the span filter, in any language)


class VendorContext(TypedDict):
    """What the vendor's own health feed says (Graph service health for M365)."""

    confirmed: bool  # the vendor lists an active issue for this service
    issue_id: str | None  # e.g. "EX1187342"
    title: str | None
    latest_post: str | None


class AffectedContext(TypedDict):
    """One customer of a vendor-side incident and how long it was affected."""

    name: str
    duration_text: str  # "42 min 10 s"; so far, while its incident is open
    seconds: float  # the same, for the span filter


class OnCallContext(TypedDict):
    """Someone a step paged through a schedule (``schedule:NAME``), when it fired."""

    level: int  # the step, 1-based
    schedule: str  # "primary"
    person: str | None  # "wang.wei"; None: nobody was on call (the channels' own lists were)
    name: str | None  # "王伟 (Wang Wei)", from people


class TimelineEntryContext(TypedDict):
    """One timeline event. People read it through ``_base/events*.txt.j2``, which word
    each kind in the message's language from ``detail``; ``text`` is the engine's record
    in English (``kind by actor: key=value, …``), for machines and unknown kinds."""

    at: datetime  # aware
    kind: str  # opened, paged, escalated, acknowledged, note, resolved, …
    text: str
    actor: str | None  # who did it (acknowledged, note, resolved by hand …)
    detail: dict[str, Any]  # what the engine recorded: level, channels, status, reason …
    oncall: list[OnCallContext]  # paged/escalated: who the step paged through schedules


class IncidentContext(TypedDict):
    id: str  # "INC-20251123-0007"
    customer: CustomerContext
    service: ServiceContext
    status: str  # down or degraded (the status that opened or last changed it)
    severity: str  # minor, major, critical
    state: str  # open, acknowledged, resolved
    opened_at: datetime  # aware
    since_text: str  # "for 17 min"
    since_seconds: float  # how long so far (to the resolution once resolved)
    reason: str  # the first failing check's reason
    failing_checks: list[FailingCheckContext]
    escalation_level: int  # steps notified so far
    step: StepContext | None  # the step this message is for (escalated, vendor_ticket)
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    duration_text: str | None  # "1 h 24 min", once resolved
    duration_seconds: float | None  # the same, for the span filter
    flapping: bool
    muted: bool
    vendor_case: str | None  # 21Vianet case number, once an operator recorded it
    vendor: VendorContext | None
    blast_radius: list[str]  # every affected customer's name for a vendor-side incident, else []
    affected: list[AffectedContext]  # the same customers with how long each was affected
    announced_customers: int | None  # customers the last page of a vendor-side incident named
    down_from: list[str]  # probe locations that saw it down (vendor-side: those only), or []
    timeline: list[TimelineEntryContext]  # oldest first
    oncall: list[OnCallContext]  # who steps paged through schedules, oldest step first


class MonitorContext(TypedDict):
    public_url: str | None
    name: str  # "csp-monitor"


class UnreachableContext(TypedDict):
    """A number no voice channel of a step could call (``voice_unavailable``)."""

    callee: str  # "+8613800000000"
    skipped: list[str]  # "tencent-call: 1 of 1 calls between 22:00 and 08:00 … used"


class TemplateContext(TypedDict):
    """Everything a template may use; ``event`` is set by the renderer."""

    event: str
    incident: IncidentContext
    ack_url: str | None  # None when no public_url is configured
    incident_url: str | None
    recipient: str
    monitor: MonitorContext
    now: datetime  # aware
    timezone: str  # IANA name the messages show next to UTC, e.g. "Asia/Shanghai"
    language: str  # "en" or "zh-CN": the recipient's
    unreachable: list[UnreachableContext]  # voice_unavailable: who could not be called; else []


def localized(name: str, language: str) -> str:
    """``opened/sms.txt.j2`` in ``language``: ``opened/sms.zh-CN.txt.j2`` (English is the
    unmarked name). The two sit side by side in the event's directory."""
    if language == DEFAULT_LANGUAGE:
        return name
    stem, dot, rest = name.partition(".")
    return f"{stem}.{language}.{rest}" if dot else f"{name}.{language}"


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """One event rendered in every format its templates provide."""

    subject: str  # one line
    text: str
    html: str | None  # None: the event has no HTML template
    sms: str  # cleaned for GSM-7 and fitted to the configured segments; "" if no template
    payload: dict[str, Any]  # the webhook JSON, parsed; {} if no template
    chat: str = ""  # group-chat markdown (WeCom, DingTalk, Feishu); "" if no template
    voice: str = ""  # text-to-speech for a voice call, one paragraph; "" if no template


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """A template that cannot be rendered: where, and why."""

    file: str  # path of the template file (its name when no file was found)
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class TemplateRenderError(Exception):
    """Rendering failed; ``problem`` says which file and line."""

    def __init__(self, problem: TemplateProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# ------------------------------------------------------------------------------ filters


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        # A naive datetime has no meaning for a page read in two time zones; the engine
        # works in UTC, so that is what it is.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


@pass_context
def _local(
    context: Context,
    value: datetime | float | None,
    fmt: str = "%Y-%m-%d %H:%M",
    tz: str | None = None,
) -> str:
    """``value`` in the message's time zone (``timezone`` in the context) or ``tz``."""
    if value is None:
        return "n/a"
    zone = ZoneInfo(tz or context["timezone"])
    return _as_datetime(value).astimezone(zone).strftime(fmt)


def _utc(value: datetime | float | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if value is None:
        return "n/a"
    return _as_datetime(value).astimezone(UTC).strftime(fmt)


@pass_context
def _both(context: Context, value: datetime | float | None, tz: str | None = None) -> str:
    """``2025-11-24 07:12 Asia/Shanghai (2025-11-23 23:12 UTC)``; the UTC date is left
    out when it is the same day. In Chinese:
    ``北京时间 2025-11-24 07:12（UTC 2025-11-23 23:12）``."""
    if value is None:
        return "n/a"
    name = tz or context["timezone"]
    moment = _as_datetime(value)
    local = moment.astimezone(ZoneInfo(name))
    utc = moment.astimezone(UTC)
    utc_text = utc.strftime("%H:%M" if utc.date() == local.date() else "%Y-%m-%d %H:%M")
    if context.get("language") == "zh-CN":
        zone = "北京时间" if name == "Asia/Shanghai" else name
        return f"{zone} {local:%Y-%m-%d %H:%M}（UTC {utc_text}）"
    return f"{local:%Y-%m-%d %H:%M} {name} ({utc_text} UTC)"


_SPAN_UNITS = {"en": ("s", "min", "h"), "zh-CN": ("秒", "分钟", "小时")}


@pass_context
def _span(context: Context, seconds: float | None) -> str:
    """A duration in the message's language: ``1 h 24 min`` / ``1 小时 24 分钟``; seconds
    count while it is under an hour."""
    if seconds is None:
        return ""
    sec, minute, hour = _SPAN_UNITS.get(context.get("language") or "en", _SPAN_UNITS["en"])
    minutes, secs = divmod(max(0, int(seconds)), 60)
    if minutes < 1:
        return f"{secs} {sec}"
    if minutes < 60:
        return f"{minutes} {minute} {secs} {sec}" if secs else f"{minutes} {minute}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} {hour} {minutes} {minute}" if minutes else f"{hours} {hour}"


def _iso(value: datetime | float | None) -> str | None:
    return None if value is None else _as_datetime(value).astimezone(UTC).isoformat()


def _short_name(name: str) -> str:
    """``Exchange Online (operated by 21Vianet)`` → ``Exchange Online`` (for SMS)."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", name) or name


def _gsm_name(name: str | None) -> str:
    """The part of a name an English SMS can carry without turning into UCS-2 (half the
    characters per segment): ``王伟 (Wang Wei)`` → ``Wang Wei``; ``Li Na`` unchanged; ""
    when no part of it is GSM-7 (the template then shows the person's id)."""
    if not name:
        return ""
    if is_gsm(name):
        return name
    for part in reversed(re.findall(r"\(([^()]*)\)", name)):
        if part.strip() and is_gsm(part):
            return str(part).strip()
    return ""


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finalize(value: object) -> object:
    # None is "not known yet" (acknowledged_by before an ack): print nothing, never "None".
    return "" if value is None else value


# ----------------------------------------------------------------------------- renderer


def _notification_template(name: str) -> bool:
    """Templates of notifications; ``report/`` holds the report documents, which the report
    renderer (monitor/reports/render.py) checks with report data."""
    return name.endswith(".j2") and not name.startswith("report/")


class TemplateRenderer:
    """Renders an event's templates from ``directories`` (searched first) and the
    built-in ``alert_templates/``."""

    def __init__(self, directories: Sequence[Path] = (), *, sms_max_segments: int = 2) -> None:
        if sms_max_segments < 1:
            raise ValueError("sms_max_segments must be at least 1")
        for directory in directories:
            if not Path(directory).is_dir():
                raise ValueError(f"template directory {directory} does not exist")
        # Absolute paths: error frames are matched against them to find file and line.
        self.search_path = tuple(
            Path(os.path.abspath(d)) for d in (*directories, BUILTIN_TEMPLATES)
        )
        self.sms_max_segments = sms_max_segments
        # Templates are read once per renderer (start-up): a file half-saved in an
        # editor never reaches a page, and what `validate` checked is what is sent.
        self.env = sandboxed_environment(
            self.search_path,
            autoescape=select_autoescape(
                enabled_extensions=("html.j2", "htm.j2", "html", "htm"),
                disabled_extensions=(),
                default_for_string=False,
                default=False,
            ),
        )
        self.env.filters.update(
            local=_local,
            utc=_utc,
            both=_both,
            iso=_iso,
            short_name=_short_name,
            span=_span,
            gsm_name=_gsm_name,
        )
        # tojson: datetimes as ISO 8601 UTC, Chinese names readable rather than \uXXXX.
        self.env.policies["json.dumps_kwargs"] = {
            "sort_keys": False,
            "ensure_ascii": False,
            "default": _json_default,
        }

    def render(self, event: str, context: Mapping[str, Any]) -> RenderedParts:
        """Every format of ``event`` in the context's ``language`` (English when it names
        none); raises :class:`TemplateRenderError`."""
        language = context.get("language") or DEFAULT_LANGUAGE
        if language not in LANGUAGES:
            raise TemplateRenderError(
                TemplateProblem(event, None, f"unknown language {language!r}: en or zh-CN")
            )
        values = {**context, "event": event, "language": language}
        subject = self._render_part(event, SUBJECT, values) or ""  # required: never None
        text = self._render_part(event, TEXT, values) or ""
        html = self._render_part(event, HTML, values)
        sms = self._render_part(event, SMS, values)
        webhook = self._render_part(event, WEBHOOK, values)
        chat = self._render_part(event, CHAT, values)
        voice = self._render_part(event, VOICE, values)
        return RenderedParts(
            subject=self._finish_subject(event, subject),
            text=_tidy_text(text),
            html=html,
            sms=self._finish_sms(sms) if sms is not None else "",
            payload=self._finish_webhook(event, webhook) if webhook is not None else {},
            chat=_tidy_text(chat).rstrip("\n") if chat is not None else "",
            voice=" ".join(voice.split()) if voice is not None else "",
        )

    def check_all(
        self, context: Mapping[str, Any] | Callable[[str], Mapping[str, Any]]
    ) -> list[TemplateProblem]:
        """Every problem in the templates: syntax errors in any file of the search path,
        then every event × format rendered with ``context`` (or ``context(event)``)."""
        problems: list[TemplateProblem] = []
        seen: set[str] = set()
        for name in self.env.list_templates(filter_func=_notification_template):
            try:
                self.env.get_template(name)
            except Exception as exc:  # every problem is reported, none raised
                problems.append(self._problem(name, exc))
                seen.add(name)
        for event, language in ((e, lang) for e in EVENTS for lang in LANGUAGES):
            values = {
                **(context(event) if callable(context) else context),
                "event": event,
                "language": language,
            }
            for fmt in FORMATS:
                name = f"{event}/{fmt}"
                if name in seen or localized(name, language) in seen:
                    continue
                if missing := self._missing_translation(event, fmt, language):
                    problems.append(missing)
                    continue
                try:
                    raw = self._render_part(event, fmt, values)
                    if raw is not None and fmt == SUBJECT:
                        self._finish_subject(event, raw)
                    elif raw is not None and fmt == WEBHOOK:
                        self._finish_webhook(event, raw)
                except TemplateRenderError as exc:
                    problems.append(exc.problem)
        # A broken shared file (_base/…) breaks every event that uses it: report it once.
        return list(dict.fromkeys(problems))

    # ------------------------------------------------------------------------- helpers

    def _missing_translation(self, event: str, fmt: str, language: str) -> TemplateProblem | None:
        """A worded format that exists in English but not in ``language``."""
        if language == DEFAULT_LANGUAGE or fmt not in WORDED_FORMATS:
            return None
        name = f"{event}/{fmt}"
        if not self._exists(name) or self._exists(localized(name, language)):
            return None
        return TemplateProblem(
            self._file_of(event, fmt), None,
            f"has no {language} version: add {localized(name, language)} beside it",
        )  # fmt: skip

    def _exists(self, name: str) -> bool:
        try:
            self.env.get_template(name)
        except TemplateNotFound:
            return False
        except Exception:  # a syntax error: it exists (and is reported elsewhere)
            return True
        return True

    def _render_part(self, event: str, fmt: str, values: Mapping[str, Any]) -> str | None:
        if not _EVENT_NAME.match(event):
            raise TemplateRenderError(TemplateProblem(event, None, "invalid event name"))
        name = f"{event}/{fmt}"
        language = values.get("language") or DEFAULT_LANGUAGE
        # The recipient's language where a template exists in it, else English.
        if language != DEFAULT_LANGUAGE and self._exists(localized(name, language)):
            name = localized(name, language)
        try:
            template = self.env.get_template(name)
        except TemplateNotFound:
            if fmt not in REQUIRED_FORMATS:
                return None
            searched = ", ".join(str(d) for d in self.search_path)
            raise TemplateRenderError(
                TemplateProblem(name, None, f"template not found in {searched}")
            ) from None
        except Exception as exc:  # a syntax error, with its file and line
            raise TemplateRenderError(self._problem(name, exc)) from exc
        try:
            return template.render(values)
        except Exception as exc:  # an operator's template must not crash us
            raise TemplateRenderError(self._problem(template.filename or name, exc)) from exc

    def _problem(self, fallback: str, exc: BaseException) -> TemplateProblem:
        return template_problem(exc, self.search_path, fallback)

    def _file_of(self, event: str, fmt: str) -> str:
        name = f"{event}/{fmt}"
        try:
            return self.env.get_template(name).filename or name
        except Exception:  # only used to label a problem
            return name

    def _finish_subject(self, event: str, raw: str) -> str:
        subject = " ".join(raw.split())
        if not subject:
            raise TemplateRenderError(
                TemplateProblem(self._file_of(event, SUBJECT), None, "renders an empty subject")
            )
        return subject

    def _finish_sms(self, raw: str) -> str:
        # Spaces and blank lines from template layout cost money in an SMS: squeeze them.
        # The last line (incident id, ack link) is kept whole when the text is shortened.
        lines = (" ".join(line.split()) for line in clean_for_sms(raw).splitlines())
        text = "\n".join(line for line in lines if line)
        return fit(text, self.sms_max_segments, keep_last_line=True)

    def _finish_webhook(self, event: str, raw: str) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            message = (
                f"renders invalid JSON: {exc.msg} at output line {exc.lineno} column "
                f"{exc.colno} (use the tojson filter for every value)"
            )
            raise TemplateRenderError(
                TemplateProblem(self._file_of(event, WEBHOOK), None, message)
            ) from None
        if not isinstance(payload, dict):
            raise TemplateRenderError(
                TemplateProblem(
                    self._file_of(event, WEBHOOK), None, "must render a JSON object ({...})"
                )
            )
        return payload


def sandboxed_environment(
    directories: Sequence[Path], *, autoescape: Callable[[str | None], bool]
) -> ImmutableSandboxedEnvironment:
    """The one kind of Jinja environment operators' templates run in: an immutable
    sandbox (no ``''.__class__.__mro__`` or ``cycler.__init__.__globals__`` escapes),
    ``StrictUndefined``, and templates read once (what was checked is what renders)."""
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(d) for d in directories]),
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
        auto_reload=False,
    )


def template_problem(
    exc: BaseException, search_path: Sequence[Path], fallback: str
) -> TemplateProblem:
    """Where ``exc`` happened: a syntax error knows; for a runtime error (an undefined
    name, a refused attribute) it is the innermost traceback frame inside a template
    directory (Jinja rewrites template frames to show the template's file and line)."""
    if isinstance(exc, TemplateSyntaxError):
        message = f"syntax error: {exc.message}"
        return TemplateProblem(exc.filename or exc.name or fallback, exc.lineno, message)
    file, line = fallback, None
    roots = tuple(f"{os.path.abspath(d)}{os.sep}" for d in search_path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(roots):
            file, line = frame.filename, frame.lineno
    return TemplateProblem(file, line, f"{type(exc).__name__}: {exc}")


def _tidy_text(raw: str) -> str:
    lines = "\n".join(line.rstrip() for line in raw.strip().splitlines())
    return _BLANK_LINES.sub("\n\n", lines) + "\n"
