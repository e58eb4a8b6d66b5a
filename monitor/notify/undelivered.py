"""Telling a recipient what never reached them, in the next message of the same incident.

The outbox delivers an incident's messages to each recipient in queue order, so
a ``resolved`` never overtakes its ``opened``. When an earlier message failed for
good (bad address, out of retries), the later one goes out all the same, and
says so: "Opened at 10:02 …, not delivered earlier". Whether a message was
delivered is known only at send time, long after the incident manager rendered
the message, so the notifier adds this note then, rendered from the event's
``undelivered.txt.j2`` template (an event without one gets no note); the rest
of the message stays as it was rendered when queued.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jinja2 import TemplateNotFound

from monitor.notify.message import RenderedMessage
from monitor.notify.sms import clean_for_sms, fit
from monitor.notify.templates import TemplateRenderer, localized
from monitor.store.records import OutboxRow

log = logging.getLogger(__name__)

TEMPLATE = "undelivered.txt.j2"
_BODY_TAG = re.compile(r"<body[^>]*>", re.IGNORECASE)


class UndeliveredNote:
    """Adds to a message the earlier messages of its incident its recipient never got."""

    def __init__(
        self,
        renderer: TemplateRenderer,
        *,
        sms_max_segments: int = 2,
        timezone: str = "Asia/Shanghai",
    ) -> None:
        self._renderer = renderer
        self._sms_max_segments = sms_max_segments
        self._timezone = timezone

    def wants(self, event: str) -> bool:
        """Whether messages of ``event`` say what was not delivered (it has a template)."""
        try:
            self._renderer.env.get_template(f"{event}/{TEMPLATE}")
        except TemplateNotFound:
            return False
        return True

    def add(self, message: RenderedMessage, missed: Sequence[OutboxRow]) -> RenderedMessage:
        """``message`` with the note about ``missed`` in its text, HTML, SMS and payload;
        unchanged when nothing was missed or the note cannot be rendered."""
        if not missed:
            return message
        undelivered = [
            {"event": row.message.event, "at": datetime.fromtimestamp(row.created_at, UTC)}
            for row in missed
        ]
        try:
            note = self._render(message.event, undelivered, message.language)
        except Exception as exc:  # an operator's broken template must not lose the page
            log.error(
                "event=template_failed template=%r incident=%s action=%r",
                f"{message.event}/{TEMPLATE}: {exc}",
                message.incident_id,
                "fix the template (csp-monitor validate); the message was sent without the note",
            )
            return message
        if not note:
            return message
        return dataclasses.replace(
            message,
            text=f"{note}\n\n{message.text}" if message.text else note,
            chat=f"{note}\n\n{message.chat}" if message.chat else message.chat,
            html=_into_html(message.html, note),
            sms=_into_sms(message.sms, note, self._sms_max_segments),
            payload=_into_payload(message.payload, undelivered),
        )

    def _render(self, event: str, undelivered: list[dict[str, Any]], language: str) -> str:
        """The note in the message's language (its zh-CN file when there is one)."""
        name = f"{event}/{TEMPLATE}"
        try:
            template = self._renderer.env.get_template(localized(name, language))
        except TemplateNotFound:
            template = self._renderer.env.get_template(name)
        raw = template.render(
            event=event, undelivered=undelivered, timezone=self._timezone, language=language
        )
        lines = (line.rstrip() for line in raw.strip().splitlines())
        return "\n".join(line for line in lines if line)


def _into_html(document: str | None, note: str) -> str | None:
    if document is None:
        return None
    paragraph = (
        '<p style="font-size:14px;margin:0 0 16px;font-weight:bold">'
        + "<br>".join(html.escape(line) for line in note.splitlines())
        + "</p>"
    )
    body = _BODY_TAG.search(document)
    if body is None:
        return paragraph + document
    return document[: body.end()] + paragraph + document[body.end() :]


def _into_sms(sms: str, note: str, max_segments: int) -> str:
    if not sms:
        return sms
    # The note comes first and the last line (the incident id) stays whole, so what is
    # shortened to fit is the middle: the status the recipient can read elsewhere.
    lines = (" ".join(line.split()) for line in clean_for_sms(f"{note}\n{sms}").splitlines())
    return fit("\n".join(line for line in lines if line), max_segments, keep_last_line=True)


def _into_payload(payload: dict[str, Any], undelivered: list[dict[str, Any]]) -> dict[str, Any]:
    if not payload:
        return payload
    return {
        **payload,
        "undelivered": [
            {"event": item["event"], "queued_at": item["at"].isoformat()} for item in undelivered
        ],
    }
