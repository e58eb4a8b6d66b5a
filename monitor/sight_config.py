"""The config of the monitor's own sight: canaries, blindness, ops channels (models only).

Canaries are written like a service's checks (``name``, ``type``, that type's
options) under ``monitor.canaries``; their options are validated by the check
type's own model when the catalog is built (``canary_targets``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from checks import check_types
from monitor.config.errors import ConfigIssue
from monitor.config_types import SLUG, Duration, StrictModel
from monitor.probe import CheckOptions, Target

CANARY_CUSTOMER = "monitor"  # canary targets' ids read monitor/canary/NAME
CANARY_SERVICE = "canary"
_BASE_FIELDS = {"name", "type", "timeout"}


class CanarySpec(BaseModel):
    """One canary as written: its type's options are checked by that type's model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=SLUG, description="Unique among the canaries, e.g. resolver")
    type: str = Field(description="A check type: dns, tcp, http, …")
    timeout: Duration = Field(5.0, description="A canary taking longer fails")


class BlindnessSettings(StrictModel):
    """When the node is blind (see README, "When the monitor cannot see")."""

    interval: Duration = Field(30.0, description="Time between canary rounds")
    retry_interval: Duration = Field(
        10.0, description="Time between rounds while the verdict is changing"
    )
    rounds: int = Field(
        2, ge=1, le=10, description="Failing (or passing) rounds in a row that change the verdict"
    )
    burst_services: int = Field(
        3,
        ge=1,
        le=10_000,
        description="Distinct services failing to be reached within burst_window "
        "that make the canaries run at once",
    )
    burst_window: Duration = Field(60.0, description="Window of a burst of failures")


def canary_targets(
    canaries: list[CanarySpec],
) -> tuple[list[tuple[Target, CheckOptions, float]], list[ConfigIssue]]:
    """Each canary as (target, validated options, timeout), and every problem found."""
    from monitor.config.validation import issues_from_validation  # validation imports models

    types = check_types()
    built: list[tuple[Target, CheckOptions, float]] = []
    issues: list[ConfigIssue] = []
    names: set[str] = set()
    for index, canary in enumerate(canaries):
        path = f"monitor.canaries[{index}]"
        if canary.name in names:
            issues.append(ConfigIssue(f"{path}.name", f"duplicate canary name {canary.name!r}"))
        names.add(canary.name)
        check_type = types.get(canary.type)
        if check_type is None:
            allowed = ", ".join(sorted(types))
            issues.append(
                ConfigIssue(
                    f"{path}.type", f"unknown check type {canary.type!r} (allowed: {allowed})"
                )
            )
            continue
        raw = {k: v for k, v in (canary.model_extra or {}).items() if k not in _BASE_FIELDS}
        try:
            options = check_type.options.model_validate(raw)
        except ValidationError as exc:
            prefix = ("monitor", "canaries", index)
            issues += issues_from_validation(exc, check_type.options, prefix)
            continue
        target = Target(CANARY_CUSTOMER, CANARY_SERVICE, canary.name, canary.type)
        built.append((target, options, canary.timeout))
    return built, issues
