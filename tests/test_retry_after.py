"""The one Retry-After parser shared by the channels and the vendor health checks."""

from __future__ import annotations

import pytest

from monitor.channels.base import http_status_error
from monitor.retry_after import MAX_SECONDS, parse_retry_after

NOW = 1_763_884_860.0  # Sun, 23 Nov 2025 08:01:00 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("  17 ", 17.0),
        ("0", 0.0),
        ("Sun, 23 Nov 2025 08:01:30 GMT", 30.0),  # an HTTP date 30 s ahead
        ("Sun, 23 Nov 2025 08:01:30 -0000", 30.0),  # the obsolete "unknown zone" form
        ("Sun, 23 Nov 2025 16:01:30 +0800", 30.0),
        ("Sun, 23 Nov 2025 07:00:00 GMT", 0.0),  # already past: no wait
        ("172800", MAX_SECONDS),  # two days asked: cut to one
        ("9" * 5000, MAX_SECONDS),  # absurd length: cut, never infinite
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("١٢٠", None),  # Arabic-Indic digits are not delta-seconds
        ("Sun, 99 Nov 2025 08:01:30 GMT", None),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_a_caller_may_set_its_own_limit() -> None:
    assert parse_retry_after("7200", NOW, limit=3600) == 3600


def test_channels_read_it_for_429_and_503_only() -> None:
    headers = {"Retry-After": "42"}
    assert http_status_error(429, headers, "", "gateway", lambda: NOW).retry_after == 42.0
    assert http_status_error(503, headers, "", "gateway", lambda: NOW).retry_after == 42.0
    assert http_status_error(500, headers, "", "gateway", lambda: NOW).retry_after is None
    huge = {"Retry-After": "9" * 400}  # float("9" * 400) would be infinity
    assert http_status_error(429, huge, "", "gateway", lambda: NOW).retry_after == MAX_SECONDS
