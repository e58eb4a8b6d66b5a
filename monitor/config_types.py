"""Value types shared by the config models: durations and strict models."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SLUG = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"

# ------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"1m30s"``, ``"500ms"``, ``"2h"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m or 500ms")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Delay = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A duration that may be zero (``after: 0m``: at once)."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def share_repeated_parts(model: BaseModel, pool: dict[Any, Any]) -> None:
    """Lets a frozen model share with its like what pydantic gives each instance a copy of:
    the set of fields the file gave (216 bytes) and equal lists and dicts of plain values
    (56–100 bytes: ``vars: {}``, ``expect_status: [200]``), kept in ``pool``. At 50,000
    customers and as many check options that was some 35 MB of equal copies. Safe for
    frozen models: no field is assigned after validation, copies (``model_copy``) make a
    set of their own, and nothing adds to a validated option."""
    if not model.model_config.get("frozen"):
        raise TypeError(f"{type(model).__name__} is not frozen: its parts cannot be shared")
    given = model.__pydantic_fields_set__
    object.__setattr__(model, "__pydantic_fields_set__", pool.setdefault(frozenset(given), given))
    values = model.__dict__
    for name, value in values.items():
        kind = type(value)
        if kind is list or kind is dict:
            items = enumerate(value) if kind is list else value.items()
            # equal lists and dicts of plain values share one (expect_status [200]); with
            # each item's type, since 1 == 1.0 == True
            try:
                key = (kind, frozenset((k, type(v), v) for k, v in items))
                values[name] = pool.setdefault(key, value)
            except TypeError:  # an item that is not hashable: this one keeps its own
                continue
