"""IANA time zone names: one check for every place a person types one.

Config files (``reports.timezone``), maintenance windows from the API and the CLI
all go through ``known_zone``, so a typo such as ``Asia/Beijing`` is refused where
it is typed, with the nearest valid names, instead of failing later in the engine.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator

MAX_ZONE_NAME = 64  # the store's column; the longest IANA name has 32 characters
_SUGGESTIONS = 3


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """Every zone the system's database holds (read once: it costs ~0.1 s)."""
    return tuple(sorted(available_timezones()))


def nearest_zones(name: str) -> list[str]:
    """Valid zone names that look like ``name``, the closest first."""
    names = zone_names()
    folded = {zone.lower(): zone for zone in names}
    if name.lower() in folded:  # asia/shanghai
        return [folded[name.lower()]]
    return difflib.get_close_matches(name[:MAX_ZONE_NAME], names, n=_SUGGESTIONS, cutoff=0.6)


def known_zone(name: str) -> str:
    """``name`` if it is a time zone this system knows; else ValueError with the nearest."""
    if len(name) <= MAX_ZONE_NAME:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        else:
            return name
    shown = name if len(name) <= MAX_ZONE_NAME else name[:MAX_ZONE_NAME] + "…"
    nearest = nearest_zones(name)
    hint = f"nearest: {', '.join(nearest)}; " if nearest else ""
    raise ValueError(
        f"unknown time zone {shown!r} ({hint}an IANA name such as Asia/Shanghai, "
        "which is Beijing time)"
    )


TimeZoneName = Annotated[str, AfterValidator(known_zone)]
"""A config or API field holding an IANA time zone name, checked by ``known_zone``."""
