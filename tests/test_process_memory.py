"""glibc's allocator settings: applied by the daemon, never over the operator's own."""

from __future__ import annotations

import platform

import pytest

from monitor.process_memory import tune_malloc

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the settings are glibc's; elsewhere none apply"
)


def test_both_settings_apply_unless_the_environment_gives_them() -> None:
    assert tune_malloc({}) == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]
    assert tune_malloc({"MALLOC_ARENA_MAX": "8"}) == ["MALLOC_MMAP_THRESHOLD_"]
    assert tune_malloc({"MALLOC_ARENA_MAX": "8", "MALLOC_MMAP_THRESHOLD_": "0"}) == []
