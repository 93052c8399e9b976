"""Compiling one entry of `notify:`: when a call's outcome tells a target, and the body it sends.

```yaml
notify:
  - id: missed-to-crm
    on: missed                 # missed, ended, connected, an event's name (EndCall, DTMF…), or a list
    if: {UN: "74951234567"}    # the same conditions as a rule's (no sources: nothing is looked up here)
    target: crm                # a name of `targets:`
    body:                      # an http target's JSON body; its strings are templates
      phone: "{caller}"        # a string that is one placeholder keeps the value's JSON type
      text: "Missed call from {caller} to {called}"
```
A placeholder names a key of the call's summary (core/notify/summary.py) or a CRMDData field of the
event (AN, UN, DN1, DTMF, Result…, missing ones empty); `{{` and `}}` are literal braces. Without
`body:` the summary itself is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ascrm.core.calls.state import CallState
from ascrm.core.notify.summary import KEYS
from ascrm.core.protocol import CRMDDATA_STRING_FIELDS, CallEvent, EventType, parse_code
from ascrm.core.rules.conditions import ConditionError, Definitions, Predicate, compile_conditions, uses_sources
from ascrm.core.rules.excerpt import excerpt

OUTCOMES: Final = ("missed", "ended", "connected")
CRM_KINDS: Final = ("missed", "ended")  # what a CRM preset target records: a call that ended
MAX_NOTIFY: Final = 100  # entries of `notify:` in all the files
MAX_BODY_STRINGS: Final = 1000  # strings of one body template
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_NAMES: Final = frozenset(KEYS) | frozenset(CRMDDATA_STRING_FIELDS)

Values = Mapping[str, Any]  # the summary's keys and the event's fields, as a body renders them
Body = Callable[[Values], Any]


class NotifyError(Exception):
    """A `notify:` entry is wrong; path is relative to the entry."""

    def __init__(self, path: tuple[Any, ...], message: str, *, about_key: bool = False) -> None:
        super().__init__(message)
        self.path, self.message, self.about_key = path, message, about_key


@dataclass(frozen=True, slots=True)
class NotifyRule:
    """One compiled `notify:` entry: the outcomes and events it is for, its condition, target and body."""

    id: str
    kinds: tuple[str, ...]  # outcomes and event names, as written (each once)
    target: str
    condition: Predicate | None = None
    body: Body | None = None  # None: the summary document
    where: str = ""  # file:line of its id, for the admin

    def holds(self, event: CallEvent, call: CallState, now: datetime) -> bool:
        """Whether its condition lets this event's call through."""
        return self.condition is None or self.condition(event, call, now)


def parse_notify(spec: Mapping[str, Any], defs: Definitions, targets: Mapping[str, str]) -> NotifyRule:
    """A `notify:` entry (its shape checked by the schema), compiled; NotifyError names the key at fault.

    targets: the kind of each target of `targets:` by name (a CRM preset builds its own requests from the
    summary: a body is for `http` targets only)."""
    notify_id = spec["id"]
    kinds = _kinds(spec["on"])
    target = spec["target"]
    if target not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise NotifyError(("target",), f"unknown target {excerpt(target)} (the rule files define: {known})")
    if "body" in spec and targets[target] != "http":
        raise NotifyError(
            ("body",), f"a {targets[target]} target sends the CRM's own requests: body: is for http targets"
        )
    condition = None
    if "if" in spec:
        if uses_sources(spec["if"], defs.sources):
            raise NotifyError(("if",), "a notification's condition cannot read a source (nothing is looked up)")
        try:
            condition = compile_conditions(spec["if"], defs)
        except ConditionError as exc:
            raise NotifyError(("if", *exc.path), exc.message, about_key=exc.about_key) from None
    body = _body(spec["body"], ("body",), [0]) if "body" in spec else None
    return NotifyRule(notify_id, kinds, target, condition, body)


def _kinds(spec: Any) -> tuple[str, ...]:
    found: list[str] = []
    items = spec if isinstance(spec, list) else [spec]
    for index, item in enumerate(items):
        path = ("on", index) if isinstance(spec, list) else ("on",)
        if isinstance(item, str) and item in OUTCOMES:
            kind = item
        else:
            code = parse_code(item, EventType)
            if code is None or int(code) not in EventType._value2member_map_:
                names = ", ".join(member.name for member in EventType)
                raise NotifyError(
                    path, f"unknown outcome or event {excerpt(item)} (known: {', '.join(OUTCOMES)}, {names})"
                )
            kind = EventType(int(code)).name
        if kind not in found:
            found.append(kind)
    if not found:
        raise NotifyError(("on",), "on: names at least one outcome or event")
    return tuple(found)


def _body(spec: Any, where: tuple[Any, ...], strings: list[int]) -> Body:
    """A JSON body template: its strings are templates over Values; numbers, booleans and null as written."""
    if isinstance(spec, str):
        strings[0] += 1
        if strings[0] > MAX_BODY_STRINGS:
            raise NotifyError(where, f"a body has at most {MAX_BODY_STRINGS} strings")
        return _string(spec, where)
    if isinstance(spec, dict):
        parts = tuple((str(key), _body(value, (*where, key), strings)) for key, value in spec.items())
        return lambda values: {key: part(values) for key, part in parts}
    if isinstance(spec, list):
        items = tuple(_body(value, (*where, index), strings) for index, value in enumerate(spec))
        return lambda values: [item(values) for item in items]
    return lambda values: spec  # a number, true, false, null


def _string(text: str, where: tuple[Any, ...]) -> Body:
    parts: list[str | tuple[str]] = []  # literal text, or (name,) of a placeholder
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif match.group("name") is None:
            raise NotifyError(where, f"a stray {token!r} in {excerpt(text)} (write {token * 2} for the brace itself)")
        elif match.group("name") not in _NAMES:
            known = ", ".join((*KEYS, *CRMDDATA_STRING_FIELDS))
            raise NotifyError(where, f"unknown placeholder {{{match.group('name')}}} (known: {known})")
        else:
            parts.append((match.group("name"),))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    if len(parts) == 1 and isinstance(parts[0], tuple):  # "{talk_seconds}": the value as it is
        name = parts[0][0]
        return lambda values: values.get(name)
    if all(isinstance(part, str) for part in parts):
        literal = "".join(part for part in parts if isinstance(part, str))
        return lambda values: literal
    frozen = tuple(parts)
    return lambda values: "".join(part if isinstance(part, str) else _text(values.get(part[0])) for part in frozen)


def _text(value: Any) -> str:
    """A value inside a string: null is empty, a list its items joined by commas, a boolean true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(item) for item in value)
    return str(value)
