"""The ``Retry-After`` header (RFC 9110 §10.2.3), read the same way by every caller:
the notification channels (SMS gateways, webhooks) and the vendor health checks.

It is either a number of seconds or an HTTP date. A header that is neither is
ignored (the caller's own backoff applies) rather than trusted: a proxy's
garbage must not stop deliveries, and a 5,000-digit number must not become an
infinite wait.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC

MAX_SECONDS = 86_400.0  # longer asks are cut to a day: a page must not wait for ever
_MAX_DIGITS = 9


def parse_retry_after(value: str | None, now: float, *, limit: float = MAX_SECONDS) -> float | None:
    """Seconds to wait from a ``Retry-After`` value at ``now`` (Unix time), at most
    ``limit``; 0 for a date already past; None when the value is missing or malformed."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > _MAX_DIGITS:
            return limit
        return min(float(text), limit)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with an unknown local offset
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now, 0.0), limit)


def retry_after_header(
    headers: Mapping[str, str], now: float, *, limit: float = MAX_SECONDS
) -> float | None:
    """``parse_retry_after`` of the ``Retry-After`` header in ``headers``, if any."""
    return parse_retry_after(headers.get("Retry-After"), now, limit=limit)
