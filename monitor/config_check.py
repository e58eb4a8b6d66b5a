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
from monitor.config.models import ConfigBase
from monitor.customer_updates import check_update_templates
from monitor.engine.oncall import schedule_name
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
    warnings += _unpaged_subscriptions(catalog) + chinese_sms_in_one_segment(catalog.config)
    return CheckedConfig(catalog, renderer, warnings)


def chinese_sms_in_one_segment(config: ConfigBase) -> tuple[ConfigIssue, ...]:
    """SMS channels that may send Chinese while ``sms_max_segments`` is 1: a Chinese SMS
    is UCS-2, 70 characters, and the incident id with the acknowledge link alone take
    about 80, so such an SMS arrives without them (the renderer keeps the headline)."""
    if config.notifications.sms_max_segments != 1:
        return ()
    readers = _chinese_readers(config)
    issues = []
    for name, options in config.channels.items():
        if not options.sends_sms:
            continue
        default = options.language or config.notifications.language
        who = ["its recipients (the channel's language)"] if default == "zh-CN" else []
        who += sorted(readers.get(name, set()))
        if who:
            issues.append(
                ConfigIssue(
                    "notifications.sms_max_segments",
                    f"is 1, and SMS channel {name!r} sends Chinese to {', '.join(who)}: a "
                    "Chinese SMS holds 70 characters, too few for the incident id and the "
                    "acknowledge link (about 80), so they are cut off; set it to 2 or more",
                )
            )
    return tuple(issues)


def _chinese_readers(config: ConfigBase) -> dict[str, set[str]]:
    """Channel → people and contacts reading Chinese that its steps page: members of the
    schedules a step pages on it and contacts whose phone it sends to."""
    chinese_phones = {
        contact.phone: f"contact {contact.name} (customer {customer.id})"
        for customer in config.customers
        for contact in customer.contacts
        if contact.phone and contact.language == "zh-CN"
    }
    chinese_phones.update(
        (person.phone, f"person {person_id}")
        for person_id, person in config.people.items()
        if person.phone and person.language == "zh-CN"
    )
    readers: dict[str, set[str]] = {}
    for name, options in config.channels.items():
        for phone in getattr(options, "to", None) or ():
            if str(phone) in chinese_phones:
                readers.setdefault(name, set()).add(chinese_phones[str(phone)])
    for policy in config.escalation_policies.values():
        for step in policy.steps:
            for item in step.notify:
                recipients = item.recipients if item.recipients is not None else step.recipients
                for recipient in recipients:
                    wanted = schedule_name(recipient)
                    spec = config.schedules.get(wanted) if wanted else None
                    members = {m for layer in spec.layers for m in layer.members} if spec else set()
                    found = {
                        f"person {m}"
                        for m in members
                        if m in config.people and config.people[m].language == "zh-CN"
                    }
                    if recipient in chinese_phones:
                        found.add(chinese_phones[recipient])
                    if found:
                        readers.setdefault(item.channel, set()).update(found)
    return readers


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
