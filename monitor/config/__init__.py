"""Configuration: the YAML file's models, loading and precise error reporting.

* ``errors``: a problem is a path and a message; ``ConfigError`` holds them all;
* ``loading``: the file's size limit, its encoding, a YAML loader that refuses
  duplicate keys, deep nesting and alias bombs;
* ``references``: ``${ENV}`` and ``file:`` values, never quoted in a message;
* ``models``: the pydantic models of every part of the file;
* ``validation``: both models applied and the cross-references checked, every
  problem collected (``parse_config``).

Everything the rest of the code uses is importable from ``monitor.config``.
"""

from monitor.config.errors import ConfigError, ConfigIssue, format_path, redact
from monitor.config.loading import (
    DEFAULT_MAX_CONFIG_BYTES,
    MAX_ALIAS_NODES,
    MAX_CONFIG_BYTES_ENV,
    MAX_NESTING,
    max_config_bytes,
    read_config_bytes,
    read_yaml,
)
from monitor.config.models import (
    ApiToken,
    CheckBase,
    ClusterSettings,
    ConfigBase,
    Contact,
    CustomerSpec,
    Defaults,
    MonitorSettings,
    Placement,
    ServiceSpec,
    SubscriptionSpec,
    TemplateCheck,
    TemplateService,
    Tier,
    Timing,
    TimingOverrides,
    check_options,
    config_model,
    json_schema,
    majority,
    template_model,
)
from monitor.config.references import resolve_secrets
from monitor.config.validation import (
    cross_reference_issues,
    issues_from_validation,
    parse_config,
    policy_reference_issues,
)

__all__ = [
    "DEFAULT_MAX_CONFIG_BYTES",
    "MAX_ALIAS_NODES",
    "MAX_CONFIG_BYTES_ENV",
    "MAX_NESTING",
    "ApiToken",
    "CheckBase",
    "ClusterSettings",
    "ConfigBase",
    "ConfigError",
    "ConfigIssue",
    "Contact",
    "CustomerSpec",
    "Defaults",
    "MonitorSettings",
    "Placement",
    "ServiceSpec",
    "SubscriptionSpec",
    "TemplateCheck",
    "TemplateService",
    "Tier",
    "Timing",
    "TimingOverrides",
    "check_options",
    "config_model",
    "cross_reference_issues",
    "format_path",
    "issues_from_validation",
    "json_schema",
    "majority",
    "max_config_bytes",
    "parse_config",
    "policy_reference_issues",
    "read_config_bytes",
    "read_yaml",
    "redact",
    "resolve_secrets",
    "template_model",
]
