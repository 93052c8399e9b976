"""A rule's `do:`: the action and its param template, checked against the platform's formats."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import FULL_NUMBER_ACTIONS, Action, CallEvent, national_number, param_error, parse_code
from ascrm.core.rules.conditions import NUMBER_FIELDS, STRING_FIELDS, Getter, getter
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.sources import source_getter

Normalize = Callable[[str], str]

_PLACEHOLDER = re.compile(
    r"\{\{|\}\}|\{pool\.(?P<pool>[A-Za-z_][A-Za-z0-9_-]*)\}"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<key>[A-Za-z0-9_]+)\])?\}|[{}]"
)
_FIELDS = ", ".join(STRING_FIELDS)
_NO_PARAM = frozenset({Action.Hangup, Action.IgnorePromptToOperator, Action.BackFromConsultCall})


class ActionError(Exception):
    """A `do:` is wrong; path is relative to the `do:` value."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True, slots=True)
class Template:
    """A param with {FIELD} and {map[FIELD]} placeholders; literal text is kept as one part."""

    parts: tuple[str | tuple[Getter, Mapping[str, str] | None, Normalize | None], ...]
    names: tuple[tuple[str, str | None], ...] = ()  # (field, map or None) per placeholder, for explaining
    finish: Normalize | None = None  # applied to the whole param (a number brought to its full form)
    literal: str | None = field(init=False)  # the param when it has no placeholders

    def __post_init__(self) -> None:
        texts = [part for part in self.parts if isinstance(part, str)]
        literal = "".join(texts) if len(texts) == len(self.parts) else None
        if literal is not None and self.finish is not None:
            literal = self.finish(literal)
        object.__setattr__(self, "literal", literal)

    def render(
        self, event: CallEvent | None, call: CallState, encode: Callable[[str], str] | None = None
    ) -> str | None:
        """The param for this event, or None when a field is missing or a map has no such key. encode:
        applied to each placeholder's value (a look-up's URL percent-encodes them)."""
        if self.literal is not None:
            return self.literal
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            read, table, normalize = part
            value = read(event, call)
            if value is not None and table is not None:
                value = table.get(normalize(value) if normalize is not None else value)
            if value is None:
                return None
            out.append(value if encode is None else encode(value))
        return "".join(out) if self.finish is None else self.finish("".join(out))

    def missing(self, event: CallEvent | None, call: CallState) -> str | None:
        """Why render() gives None: the first placeholder without a value, in words; None when all have one."""
        names = iter(self.names)
        for part in self.parts:
            if isinstance(part, str):
                continue
            (read, table, normalize), (name, table_name) = part, next(names)
            value = read(event, call)
            shown = name if table_name is None else f"{table_name}[{name}]"
            if value is None and name.startswith("pool."):
                return f"{{{shown}}}: no member of pool {name[5:]} is available for this call"
            if value is None:
                return f"{{{shown}}}: {name} has no value"
            if table is not None and table.get(normalize(value) if normalize is not None else value) is None:
                return f"{{{shown}}}: {name} {excerpt(value)} is not a key of map {table_name}"
        return None


def parse_template(
    text: str,
    maps: Mapping[str, Mapping[str, str]],
    normalize: Normalize | None = None,
    sources: frozenset[str] = frozenset(),
    pools: frozenset[str] = frozenset(),
) -> Template:
    """Compile a param; ActionError names an unknown field, map, source or pool, or a stray brace.

    normalize is the file's number normalisation: a map is looked up with the normalised number.
    sources: the names of `sources:`, read like fields ({owner}, {managers[owner]}). pools: the names
    of `pools:`, each read as {pool.NAME}: a member picked for the call (missing when none is left).
    """
    parts: list[str | tuple[Getter, Mapping[str, str] | None, Normalize | None]] = []
    names: list[tuple[str, str | None]] = []
    literal = ""
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal += text[position : match.start()]
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal += token[0]
            continue
        pool, name, key = match.group("pool"), match.group("name"), match.group("key")
        if pool is not None:
            if pool not in pools:
                known = ", ".join(sorted(pools)) or "none"
                raise ActionError((), f"no pool named {excerpt(pool)} in {excerpt(text)} (defined: {known})")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append((source_getter(f"pool:{pool}"), None, None))
            names.append((f"pool.{pool}", None))
            continue
        if name is None:
            raise ActionError((), f"stray {excerpt(token)} in {excerpt(text)} (write {{{{ or }}}} for a literal brace)")
        if literal:
            parts.append(literal)
            literal = ""
        if key is None:
            if name in sources:
                parts.append((source_getter(name), None, None))
            elif name in STRING_FIELDS:
                parts.append((getter(name), None, None))
            else:
                raise ActionError((), f"unknown field {{{name}}} in {excerpt(text)} (known: {_known(sources)})")
            names.append((name, None))
        else:
            if name not in maps:
                raise ActionError((), f"no map named {excerpt(name)} in {excerpt(text)}")
            if key in sources:
                parts.append((source_getter(key), maps[name], None))
            elif key in STRING_FIELDS:
                parts.append((getter(key), maps[name], normalize if key in NUMBER_FIELDS else None))
            else:
                raise ActionError((), f"unknown field {excerpt(key)} in {excerpt(text)} (known: {_known(sources)})")
            names.append((key, name))
    literal += text[position:]
    if literal:
        parts.append(literal)
    return Template(tuple(parts), tuple(names))


def _known(sources: frozenset[str]) -> str:
    return ", ".join((_FIELDS, *sorted(sources)))


def parse_action(
    spec: Any,
    maps: Mapping[str, Mapping[str, str]],
    normalize: Normalize | None = None,
    sources: frozenset[str] = frozenset(),
    pools: frozenset[str] = frozenset(),
) -> tuple[Action, Template]:
    """`Hangup`, or `{TransferDN: "7495…"}`: the action and its param template.

    A literal TransferPBX param may take the outgoing-call poll forms; the caller checks that it
    is then a poll rule. normalize (the file's) also brings TransferDN and TransferDNRec params,
    literal or rendered, to the full form.
    """
    if isinstance(spec, str):
        action = _action(spec)
        if action not in _NO_PARAM:
            raise ActionError((), f"{action.name} needs a param: {{{action.name}: …}}")
        return action, Template(())
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ActionError((), "'do' takes an action name, or one {Action: param}")
    [(name, param)] = spec.items()
    action = _action(name)
    if param is None:
        param = ""
    if isinstance(param, bool) or not isinstance(param, (str, int)):
        raise ActionError((name,), f"{action.name}'s param is text, not {excerpt(param)}")
    try:
        template = parse_template(str(param), maps, normalize, sources, pools)
    except ActionError as exc:
        raise ActionError((name,), exc.message) from None
    if normalize is not None and action in FULL_NUMBER_ACTIONS:
        template = replace(template, finish=_full_number(normalize))
    literal = template.literal
    if literal is not None:
        problem = param_error(action, literal)
        if action in FULL_NUMBER_ACTIONS and national_number(literal):
            problem = f"{problem} (or set `normalize: ru` in the file to send it in the full form)"
        if (
            problem is not None
            and action == Action.TransferPBX
            and not param_error(action, literal, outgoing_poll=True)
        ):
            problem = None
        if problem is not None:
            raise ActionError((name,), f"{action.name} param {excerpt(literal)} {problem}")
    return action, template


def _action(name: Any) -> Action:
    action = parse_code(name, Action) if isinstance(name, (str, int)) and not isinstance(name, bool) else None
    if not isinstance(action, Action):
        known = ", ".join(member.name for member in Action)
        raise ActionError((), f"unknown action {excerpt(name)} (known: {known})")
    return action


def _full_number(normalize: Normalize) -> Normalize:
    """A param brought to the full form by the file's normalisation, when it is a number; else as it was."""

    def finish(param: str) -> str:
        number = normalize(param)
        return number if number.isascii() and number.isdigit() else param

    return finish
