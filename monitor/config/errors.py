"""Config problems: each one a path and a message, all of them in one ConfigError.

Every problem is reported as ``path: message`` with the path written the way
an operator reads the file (``customers[2].subscriptions[0].service``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str = "config") -> None:
        self.issues = sorted(set(issues))
        self.source = source
        super().__init__(self.summary())

    def redacted(self, revealed: Iterable[str]) -> ConfigError:
        """The same problems, with every value in ``revealed`` (what ``${ENV}`` and
        ``file:`` references were replaced by) shown as ``***`` wherever a message quotes it."""
        return ConfigError(
            [ConfigIssue(i.path, redact(i.message, revealed)) for i in self.issues], self.source
        )

    def summary(self) -> str:
        count = len(self.issues)
        lines = [f"{self.source}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


def redact(text: str, revealed: Iterable[str]) -> str:
    """``text`` with each of the ``revealed`` values replaced by ``***``.

    Longest first, so that a value containing another is hidden whole; also in the
    escaped form ``repr()`` gives it. A value of one to three characters is hidden
    only where it stands alone, so that ``customers[1]`` survives a secret ``1``.
    """
    for value in sorted({v for v in revealed if v}, key=len, reverse=True):
        for form in dict.fromkeys((value, repr(value)[1:-1])):
            if len(form) >= 4:
                text = text.replace(form, "***")
            else:
                text = re.sub(rf"(?<![\w.-]){re.escape(form)}(?![\w.-])", "***", text)
    return text


def format_path(loc: Iterable[int | str]) -> str:
    """``('customers', 2, 'subscriptions', 0)`` → ``customers[2].subscriptions[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
