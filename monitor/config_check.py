"""Everything a config must pass before it runs: its catalog and its templates.

``csp-monitor validate``, start-up and a reload use this one function, so what
``validate`` accepts starts, and a reload that would fail in any part is refused
before anything of the running config is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from monitor.catalog import Catalog, load_catalog
from monitor.config import ConfigError, ConfigIssue
from monitor.customer_updates import check_update_templates
from monitor.notify.sample import sample_context
from monitor.notify.templates import TemplateRenderer
from monitor.oncall_messages import check_gap_templates
from monitor.ops_messages import check_ops_templates
from monitor.reports.render import check_templates as check_report_templates


@dataclass(frozen=True)
class CheckedConfig:
    """A config that passed every check, with the renderer its templates were checked by."""

    catalog: Catalog
    renderer: TemplateRenderer
    warnings: tuple[ConfigIssue, ...] = ()  # settings that work but put something at risk


def templates_directories(catalog: Catalog, base: Path) -> list[Path]:
    """The operator's template directory (relative to the config file), if one is set."""
    configured = catalog.config.notifications.templates_dir
    if not configured:
        return []
    path = Path(configured)
    return [path if path.is_absolute() else base / path]


def check_config(
    path: str | Path, env: Mapping[str, str] | None = None, *, max_bytes: int | None = None
) -> CheckedConfig:
    """Load ``path`` and check its templates; raise ConfigError with every problem."""
    catalog = load_catalog(path, dict(env) if env is not None else None, max_bytes=max_bytes)
    return check_catalog(catalog, Path(path).resolve().parent)


def check_catalog(catalog: Catalog, base: Path) -> CheckedConfig:
    """Every message template rendered with the sample incident, every report template
    with an empty report; raise ConfigError naming each problem's file and line."""
    directories = templates_directories(catalog, base)
    for directory in directories:
        if not directory.is_dir():
            raise ConfigError(
                [
                    ConfigIssue(
                        "notifications.templates_dir",
                        f"directory {str(directory)!r} does not exist",
                    )
                ],
                catalog.source,
            )
    renderer = TemplateRenderer(
        directories, sms_max_segments=catalog.config.notifications.sms_max_segments
    )
    problems = [
        *renderer.check_all(sample_context),
        *check_ops_templates(renderer),
        *check_gap_templates(renderer),
        *check_update_templates(renderer),
        *check_report_templates(catalog, directories),
    ]
    if problems:
        raise ConfigError(
            [ConfigIssue("", f"template {problem}") for problem in problems], catalog.source
        )
    warnings = tuple(
        ConfigIssue(f"channels.{name}", warning)
        for name, options in catalog.config.channels.items()
        for warning in options.warnings()
    )
    return CheckedConfig(catalog, renderer, warnings + _unpaged_subscriptions(catalog))


def _unpaged_subscriptions(catalog: Catalog) -> tuple[ConfigIssue, ...]:
    """Subscriptions no escalation policy applies to: their incidents open and page nobody,
    which is legal (a trial customer) but far more often a forgotten default_policy."""
    config = catalog.config
    if config.incidents.default_policy is not None:
        return ()
    unpaged = [
        f"{customer}/{service}"
        for customer, service in catalog.subscriptions
        if not (
            catalog.customers[customer].escalation_policy
            or catalog.services[service].escalation_policy
        )
    ]
    if not unpaged:
        return ()
    shown = ", ".join(unpaged[:5]) + (f" and {len(unpaged) - 5} more" if len(unpaged) > 5 else "")
    return (
        ConfigIssue(
            "incidents.default_policy",
            f"not set, and no escalation policy applies to {len(unpaged)} "
            f"subscription{'s' if len(unpaged) != 1 else ''} ({shown}): "
            "their incidents will page nobody",
        ),
    )
