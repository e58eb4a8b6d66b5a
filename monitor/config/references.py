"""``${ENV}`` and ``file:`` references: replaced before validation, never quoted after."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitor.config.errors import ConfigIssue, format_path

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_secrets(
    value: Any,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
    loc: tuple[int | str, ...] = (),
    revealed: set[str] | None = None,
) -> Any:
    """Replace ``${VAR}``, ``${VAR:-default}`` and whole-value ``file:/path`` references.

    References are allowed in any field (a customer's ``vars`` carry secrets into check
    options); what they were replaced by is added to ``revealed``, and no message ever
    quotes it (:meth:`ConfigError.redacted`). Secret fields hold it as a ``SecretStr``.
    """
    revealed = set() if revealed is None else revealed
    if isinstance(value, dict):
        return {k: resolve_secrets(v, env, issues, (*loc, k), revealed) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, env, issues, (*loc, i), revealed) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if value.startswith("file:"):
        path = Path(value.removeprefix("file:"))
        try:
            content = path.read_text(encoding="utf-8").strip()
            revealed.add(content)
            return content
        except UnicodeDecodeError:
            issues.append(
                ConfigIssue(format_path(loc), f"secret file {str(path)!r} is not UTF-8 text")
            )
            return ""
        except OSError as exc:
            issues.append(
                ConfigIssue(
                    format_path(loc),
                    f"cannot read secret file {str(path)!r}: {exc.strerror or exc}",
                )
            )
            return ""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            revealed.add(env[name])
            return env[name]
        if default is not None:
            return default
        issues.append(ConfigIssue(format_path(loc), f"environment variable {name} is not set"))
        return ""

    return _ENV_REF.sub(substitute, value) if "$" in value else value
