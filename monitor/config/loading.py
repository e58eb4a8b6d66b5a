"""Reading a config file: its size, its encoding, and YAML without surprises.

Everything here happens before the document is used: a file too large, not UTF-8,
with duplicate keys, nested too deep or with aliases that would expand beyond a
budget is refused with a ConfigError naming the limit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from monitor.config.errors import ConfigError, ConfigIssue

DEFAULT_MAX_CONFIG_BYTES = 10 * 1024 * 1024
MAX_CONFIG_BYTES_ENV = "CSP_MONITOR_MAX_CONFIG_BYTES"
MAX_ALIAS_NODES = 100_000
"""Nodes that aliases (``*name``) may add to a document when expanded. A config that
shares a list of subscriptions between thousands of customers stays far below it; a
"billion laughs" file of nested aliases (1 KB, 10**9 nodes) is refused while it is
composed, before anything is expanded."""
MAX_NESTING = 100
"""Levels of nested mappings and lists: a config needs about ten."""


def max_config_bytes(configured: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """The size limit of a config file: ``configured`` (``--max-config-bytes``), else
    ``$CSP_MONITOR_MAX_CONFIG_BYTES``, else 10 MiB. It is read before the file is, so it
    cannot live in the file."""
    if configured is not None:
        return configured
    value = (os.environ if env is None else env).get(MAX_CONFIG_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_CONFIG_BYTES
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            [ConfigIssue("", f"{MAX_CONFIG_BYTES_ENV} must be a positive number of bytes")],
            MAX_CONFIG_BYTES_ENV,
        )
    return int(value)


def read_config_bytes(path: Path, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and text; ConfigError when it cannot be read, is larger than
    ``max_bytes`` (checked before anything is parsed) or is not UTF-8."""
    source = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue("", f"cannot read {source}: {exc.strerror or exc}")], source
        ) from None
    if len(data) > max_bytes:
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    f"the file is larger than the limit of {max_bytes} bytes "
                    f"(raise it with --max-config-bytes or {MAX_CONFIG_BYTES_ENV})",
                )
            ],
            source,
        )
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigIssue("", f"the file is not valid UTF-8 (line {line}, byte {exc.start})")],
            source,
        ) from None


class _RefusedYaml(yaml.MarkedYAMLError):
    """A document the loader will not build: an alias bomb, a recursive alias, deep nesting."""


class _CheckedComposer(yaml.composer.Composer):
    """Composes the document's nodes, checking aliases and nesting as it goes.

    It refuses duplicate keys instead of keeping the last, and counts while composing
    what aliases would expand to: nested aliases cost nothing to compose (an alias is a
    reference to its anchor's node) but every later pass (secrets, validation) copies
    them, so a small file could otherwise fill the memory.
    """

    def _start_checks(self) -> None:
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
        self._alias_nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[attr-defined]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # its anchor's node is still being composed: it contains itself
                raise _RefusedYaml(
                    None, None, f"alias *{event.anchor} is inside its own anchor", mark
                )
            self._alias_nodes += size
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise _RefusedYaml(
                    None,
                    None,
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes, the limit "
                    "(write the repeated parts out, or nest fewer aliases)",
                    mark,
                )
            return node
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _RefusedYaml(
                    None,
                    None,
                    f"nested more than {MAX_NESTING} levels deep, the limit",
                    mark,
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        return node


class _ConfigLoader(_CheckedComposer, yaml.SafeLoader):
    """The pure-Python loader: its error messages are the ones users see."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_checks()


def refused_graph(root: yaml.Node) -> str | None:
    """Why ``_CheckedComposer`` would refuse the composed ``root``, or None: the same
    nesting and alias checks, made on a finished node graph (an alias is its anchor's
    node met again; a node met inside itself is a recursive alias). Document order is
    the order of a depth-first walk, so it counts exactly what the composer counts."""
    sizes: dict[int, int] = {}  # id(node) -> nodes it expands to, once it is complete
    composing: set[int] = set()
    aliased = 0

    def walk(node: yaml.Node, depth: int) -> int:
        nonlocal aliased
        key = id(node)
        size = sizes.get(key)
        if size is not None:  # an alias of a complete node
            aliased += size
            if aliased > MAX_ALIAS_NODES:
                raise _RefusedYaml(None, None, "aliases expand too far", None)
            return size
        if key in composing or depth > MAX_NESTING:
            raise _RefusedYaml(None, None, "recursive alias or nested too deep", None)
        composing.add(key)
        size = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                size += walk(child, depth + 1)
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                size += walk(key_node, depth + 1) + walk(value_node, depth + 1)
        composing.discard(key)
        sizes[key] = size
        return size

    try:
        walk(root, 1)
    except _RefusedYaml as refused:
        return str(refused.problem)
    return None


def _libyaml_version() -> tuple[int, ...]:
    from yaml import _yaml  # libyaml's C extension

    return tuple(_yaml.get_version())


_FastLoader: type | None = None
# libyaml scans, parses and composes ≈ 10× faster (a 50,000-customer file); from 0.2.5 on
# it refuses flow and block nesting past 1,000 levels itself, so its recursive composer
# cannot run out of stack before ``refused_graph`` sees the document
if yaml.__with_libyaml__ and _libyaml_version() >= (0, 2, 5):
    _CParser: Any = yaml.cyaml.CParser  # type: ignore[attr-defined]

    class _CConfigLoader(
        _CParser,  # type: ignore[misc]  # libyaml's parser is untyped
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        """libyaml's parser and composer; the composed graph gets ``_CheckedComposer``'s
        checks (``refused_graph``) and the same Python constructor as ``_ConfigLoader``.
        A document it refuses is read again by ``_ConfigLoader`` for the message, which
        therefore never depends on libyaml."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def get_single_data(self) -> Any:
            node = self.get_single_node()
            if node is None:
                return None
            problem = refused_graph(node)
            if problem is not None:
                raise _RefusedYaml(None, None, problem, node.start_mark)
            return self.construct_document(node)

    _FastLoader = _CConfigLoader


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


for _loader in (_ConfigLoader, _FastLoader):
    if _loader is not None:
        _loader.add_constructor(  # type: ignore[attr-defined]
            yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
        )


def read_yaml(text: str, source: str) -> Any:
    """The document in ``text``; ConfigError for a syntax error or a refused document."""
    if _FastLoader is not None:
        try:
            return yaml.load(text, Loader=_FastLoader)
        except (yaml.YAMLError, RecursionError):
            pass  # read again below, for the message the Python loader gives
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            [ConfigIssue("", f"YAML error at {where}: {exc.problem}")], source
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"YAML error: {exc}")], source) from None
    except RecursionError:  # unreachable with MAX_NESTING, kept as a last line
        raise ConfigError([ConfigIssue("", "YAML error: nested too deep")], source) from None
