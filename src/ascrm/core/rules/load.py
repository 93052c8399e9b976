"""Reading rule files: YAML with the line and column of every key and item, files merged in name order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ascrm.core.rules.bounded import LimitError, check_events
from ascrm.core.rules.excerpt import clip, excerpt
from ascrm.core.rules.limits import RuleLimits
from ascrm.errors import AscrmError

RULE_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a rule (or list) file; line and column are 1-based."""

    file: Path
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return str(self.file)
        return f"{self.file}:{self.line}:{self.column or 1}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One error or warning about a rule set, with where it is."""

    location: Location
    message: str
    severity: str = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", clip(self.message))  # a message never carries a whole value

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class RulesError(AscrmError):
    """A rule set cannot be used; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class MarkedMap(dict[Any, Any]):
    """A YAML mapping that remembers where each key and value stands."""

    location: Location
    key_locations: dict[Any, Location]
    value_locations: dict[Any, Location]


class MarkedList(list[Any]):
    """A YAML sequence that remembers where each item stands."""

    location: Location
    item_locations: list[Location]


_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


def _make_loader(file: Path) -> type[yaml.SafeLoader]:
    class Loader(_BASE):  # type: ignore[valid-type,misc]
        """YAML 1.2-style scalars (only true/false are booleans, so `on:` stays a key), with marks."""

    def here(node: yaml.Node) -> Location:
        return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> MarkedMap:
        result = MarkedMap()
        result.location, result.key_locations, result.value_locations = here(node), {}, {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            if key in result:
                first = result.key_locations[key]
                message = f"duplicate key {excerpt(key)} (first on line {first.line})"
                raise _DuplicateKeyError(here(key_node), message)
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_locations[key] = here(key_node)
            result.value_locations[key] = here(value_node)
        return result

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> MarkedList:
        result = MarkedList(loader.construct_object(item, deep=True) for item in node.value)
        result.location, result.item_locations = here(node), [here(item) for item in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in (_BOOL, _INT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(_INT, re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789"))
    return Loader


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"  # decimal only: '0123' and '+7916…' stay strings, as numbers are meant
_TIMESTAMP = "tag:yaml.org,2002:timestamp"  # dates stay text: schedules read them and say which is bad


class _Chunks:
    """The text as a stream libyaml reads a buffer at a time through Python code: between two reads
    other threads get the GIL (given the whole text, libyaml scans a long scalar in one C call)."""

    def __init__(self, text: str) -> None:
        self._text, self._at = text, 0

    def read(self, size: int = -1) -> str:
        """At most size characters more of the text."""
        start = self._at
        self._at = len(self._text) if size < 0 else min(len(self._text), start + size)
        return self._text[start : self._at]


class _DuplicateKeyError(Exception):
    def __init__(self, location: Location, message: str) -> None:
        self.location, self.message = location, message


def read_yaml(file: Path, limits: RuleLimits | None = None) -> Any:
    """Parse one YAML file into MarkedMap / MarkedList / scalars; RulesError with the place on failure.

    A file bigger, deeper or (its aliases expanded) larger than limits allow is refused unread or as
    soon as the limit is crossed.
    """
    limits = limits or RuleLimits()
    try:
        size = file.stat().st_size
        if size > limits.file_bytes:
            raise RulesError([Problem(Location(file), _too_big(size, limits))])
        text = file.read_text(encoding="utf-8-sig")
        if len(text) > limits.file_bytes:  # grew since
            raise RulesError([Problem(Location(file), _too_big(len(text), limits))])
    except OSError as exc:
        raise RulesError([Problem(Location(file), f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise RulesError([Problem(Location(file), f"not UTF-8 text: {exc.reason}")]) from None
    try:
        loader = _make_loader(file)
        check_events(yaml.parse(_Chunks(text), Loader=loader), limits)
        return yaml.load(_Chunks(text), Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise RulesError([Problem(exc.location, exc.message)]) from None
    except LimitError as exc:
        where = Location(file, exc.mark.line + 1, exc.mark.column + 1)
        raise RulesError([Problem(where, f"refused: {exc.message}")]) from None
    except yaml.MarkedYAMLError as exc:
        flow = exc.context_mark is not None and "flow" in (exc.context or "")
        mark = exc.context_mark if flow else exc.problem_mark or exc.context_mark  # an unclosed [ or {
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise RulesError([Problem(where, f"not valid YAML: {exc.problem or exc.context}")]) from None
    except (yaml.YAMLError, ValueError) as exc:
        raise RulesError([Problem(Location(file), f"not valid YAML: {exc}")]) from None


def _too_big(size: int, limits: RuleLimits) -> str:
    return f"refused: the file has {size} bytes, more than {limits.file_bytes} (limits.rules.file_bytes)"


def rule_files(source: Path) -> list[Path]:
    """The rule files of a source: the file itself, or a folder's *.yaml/*.yml in name order."""
    if source.is_dir():
        return sorted(
            path
            for path in source.iterdir()
            if path.suffix in RULE_FILE_SUFFIXES and not path.name.startswith(".") and path.is_file()
        )
    if source.is_file():
        return [source]
    raise RulesError([Problem(Location(source), "no such file or folder")])


def locate(document: Any, path: tuple[Any, ...], fallback: Location) -> Location:
    """The most precise known place of the value at path inside a marked document."""
    where, node = getattr(document, "location", fallback), document
    for step in path:
        if isinstance(node, MarkedMap) and step in node:
            where, node = node.value_locations.get(step, where), node[step]
        elif isinstance(node, MarkedList) and isinstance(step, int) and 0 <= step < len(node):
            where, node = node.item_locations[step], node[step]
        else:
            break
    return where


def key_location(document: Any, path: tuple[Any, ...], fallback: Location) -> Location:
    """The place of the key that ends path (for unknown keys), else of its value."""
    parent = document
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return locate(document, path, fallback)
    if isinstance(parent, MarkedMap) and path and path[-1] in parent.key_locations:
        return parent.key_locations[path[-1]]
    return locate(document, path, fallback)
