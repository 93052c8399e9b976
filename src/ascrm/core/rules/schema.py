"""The shape of a rule file, checked with cerberus before the rules are compiled."""

from __future__ import annotations

from typing import Any

import cerberus

from ascrm.core.rules.excerpt import excerpt

NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_SCALAR = ["string", "integer"]

_FILE_REF = {"file": {"type": "string", "required": True, "empty": False}}
_EDITABLE = {  # a list the admin API changes; file: only seeds it
    "editable": {"type": "boolean", "required": True, "allowed": [True]},
    "file": {"type": "string", "empty": False},
}
RULE: dict[str, Any] = {
    "id": {"type": "string", "required": True, "regex": NAME},
    "description": {"type": "string"},
    "on": {
        "required": True,
        "anyof": [
            {"type": _SCALAR},
            {"type": "list", "minlength": 1, "schema": {"type": _SCALAR}},
        ],
    },
    "if": {"type": "dict", "empty": False},
    "do": {"required": True, "type": ["string", "dict"], "empty": False},
    "repeat": {"type": "boolean"},
}
NOTIFY: dict[str, Any] = {  # an entry of `notify:`; what its values mean: rules/notify.py
    "id": {"type": "string", "required": True, "regex": NAME},
    "description": {"type": "string"},
    "on": RULE["on"],
    "if": {"type": "dict", "empty": False},
    "target": {"type": "string", "required": True, "regex": NAME},
    "body": {"type": ["dict", "list", "string"]},
}
_DURATION = {"type": ["string", "integer", "float"]}  # its unit and bounds: rules/sources.py
SOURCE: dict[str, Any] = {
    "kind": {"type": "string"},
    "url": {"type": "string", "empty": False, "maxlength": 4096},
    "method": {"type": "string", "allowed": ["GET", "POST"]},
    "body": {"type": ["dict", "list", "string"]},
    "headers": {
        "type": "dict",
        "maxlength": 50,
        "keysrules": {"type": "string", "regex": r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"},
        "valuesrules": {"type": ["string", "integer"], "maxlength": 4096},
    },
    "value": {"type": "string", "regex": r"[^.]+(\.[^.]+)*", "maxlength": 512},
    "timeout": _DURATION,
    "cache": {"type": "dict", "schema": {"ttl": _DURATION, "miss_ttl": _DURATION, "stale": _DURATION}},
    "rate": {"type": ["string", "integer", "float"]},
    "burst": {"type": "integer", "min": 1, "max": 10_000},
    "breaker": {
        "type": "dict",
        "schema": {"failures": {"type": "integer", "min": 1, "max": 1000}, "cooldown": _DURATION},
    },
    "webhook": {"type": "string", "empty": False, "maxlength": 4096},
    "token": {"type": "string", "empty": False, "maxlength": 4096},
    "api_key": {"type": "string", "empty": False, "maxlength": 4096},
}
_SECRET_KEYS = frozenset({"url", "headers", "webhook", "token", "api_key", "body", "secret"})  # never echoed in errors
FILE: dict[str, Any] = {
    "timezone": {"type": "string", "empty": False},
    "normalize": {"type": "string", "allowed": ["none", "ru"]},
    "schedules": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict"},
    },
    "calendars": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict", "schema": _FILE_REF},
    },
    "lists": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {
            "anyof": [
                {"type": "list", "schema": {"type": _SCALAR}},
                {"type": "dict", "schema": _FILE_REF},
                {"type": "dict", "schema": _EDITABLE},
            ]
        },
    },
    "maps": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict"},
    },
    "sources": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": r"[A-Za-z_][A-Za-z0-9_]*"},
        "valuesrules": {"type": "dict", "schema": SOURCE},
    },
    "pools": {  # each pool's keys: pools.py
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": r"[A-Za-z_][A-Za-z0-9_-]*"},
        "valuesrules": {"type": "dict"},
    },
    "targets": {  # each target's keys depend on its kind: rules/targets.py
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict"},
    },
    "notify": {"type": "list", "nullable": True, "schema": {"type": "dict", "schema": NOTIFY}},
    "rules": {"type": "list", "nullable": True, "schema": {"type": "dict", "schema": RULE}},  # `rules:` alone: none
}
_LISTS = {"rules": ("rule", RULE), "notify": ("notification", NOTIFY)}  # checked entry by entry
_FILE_ONLY = {**FILE, **{section: {"type": "list", "nullable": True} for section in _LISTS}}


def shape_errors(document: Any) -> list[tuple[tuple[Any, ...], str, bool]]:
    """(path, message, about_the_key) for each way document departs from FILE."""
    if not isinstance(document, dict):  # not a rule file at all: say what it is, quote none of it
        message = "a rule file is a mapping with keys such as timezone, calendars, schedules, lists, maps, rules"
        return [((), f"{message}; this file is {_kind(document)}", False)]
    found = schema_errors(document, _FILE_ONLY, {})
    for section, (noun, schema) in _LISTS.items():
        entries = document.get(section)
        if isinstance(entries, list):
            found += _entry_errors(section, noun, schema, entries, MAX_SHAPE_ERRORS - len(found))
    return found


MAX_SHAPE_ERRORS = 101  # one more than a load reports: cerberus sorts its errors on each one it adds


def _entry_errors(
    section: str, noun: str, schema: dict[str, Any], entries: list[Any], limit: int
) -> list[tuple[tuple[Any, ...], str, bool]]:
    """Errors of each entry of a list section against its schema, with paths from the file, until there
    are limit of them.

    One validator per entry, not cerberus's list schema: that keeps every error of the whole list
    sorted as it goes, quadratic in the errors (a file of 5,000 rules without `do` took minutes)."""
    found: list[tuple[tuple[Any, ...], str, bool]] = []
    validator = cerberus.Validator(schema)
    for index, entry in enumerate(entries):
        if len(found) >= limit:
            break
        if not isinstance(entry, dict):
            found.append(((section, index), f"{noun} {index + 1} must be a mapping, not {_shown(entry)}", False))
        elif not validator.validate(entry, normalize=False):
            for error in _leaves(validator._errors):
                path = (section, index, *error.document_path)
                unknown = error.code == cerberus.errors.UNKNOWN_FIELD.code
                found.append((path, _message(error, {}, path), unknown))
    return sorted(found, key=_path_order)


def schema_errors(
    document: dict[Any, Any], schema: dict[str, Any], items: dict[tuple[Any, ...], str]
) -> list[tuple[tuple[Any, ...], str, bool]]:
    """(path, message, about_the_key) for each way document departs from schema, sorted by path.

    items names the entries of lists, by the path of the list (`*` for any index): {("rules",): "rule"}
    makes the third entry of `rules` "rule 3"; others are "item N".
    """
    validator = cerberus.Validator(schema)
    if validator.validate(document, normalize=False):
        return []
    found: list[tuple[tuple[Any, ...], str, bool]] = []
    for error in _leaves(validator._errors):
        path = tuple(error.document_path)
        found.append((path, _message(error, items, path), error.code == cerberus.errors.UNKNOWN_FIELD.code))
    return sorted(found, key=_path_order)


def _leaves(errors: Any) -> list[Any]:
    leaves = []
    for error in errors:
        if error.is_logic_error:  # anyof: one message saying what the value may be, not each branch's
            leaves.append(error)
        elif error.is_group_error:
            leaves += _leaves(error.child_errors)
        else:
            leaves.append(error)
    return leaves


def _shown(value: Any) -> str:
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else excerpt(value)


def _message(error: Any, items: dict[tuple[Any, ...], str], path: tuple[Any, ...]) -> str:
    value, rule = error.value, error.rule
    shown = _shown(value)
    if path[:1] in (("sources",), ("targets",)) and _SECRET_KEYS & set(path[2:]):
        shown = "a value not shown (it may hold a secret)"
    key: Any = path[-1] if path else "file"
    item = isinstance(key, int)
    if item:  # an entry of a list: 'rule 3', 'item 2'
        noun = items.get(tuple("*" if isinstance(step, int) else step for step in path[:-1]), "item")
        key = f"{noun} {key + 1}"
    if error.code == cerberus.errors.UNKNOWN_FIELD.code:
        return f"unknown key {excerpt(key)}"
    if error.code == cerberus.errors.REQUIRED_FIELD.code:
        return f"missing key {excerpt(key)}"
    if rule == "type":
        wanted = error.constraint if isinstance(error.constraint, str) else " or ".join(error.constraint)
        wanted = wanted.replace("dict", "mapping")
        return f"{key if item else excerpt(key)} must be a {wanted}, not {shown}"
    if rule == "regex":
        return f"{excerpt(key)}: {shown} is not a valid name (letters, digits, _ . -; starting with a letter or _)"
    if rule == "allowed":
        return f"{excerpt(key)}: {shown} is not one of {', '.join(map(str, error.constraint))}"
    if rule == "nullable":
        return f"{key if item else excerpt(key)} has no value"
    if rule in ("empty", "minlength"):
        return f"{excerpt(key)} must not be empty"
    if rule == "anyof" and key == "on" and path[:1] == ("notify",):
        return (
            f"'on' takes an outcome (missed, ended, connected), an event name, a code, or a list of them, not {shown}"
        )
    if rule == "anyof" and key == "on":
        return f"'on' takes an event name, a code, 'poll', or a list of them, not {shown}"
    if rule == "anyof":
        lists = '("7916*" for a prefix), {file: path} or {editable: true}'
        return f"{excerpt(key)}: a list of numbers {lists}, not {shown}"
    return f"{excerpt(key)}: {rule} {excerpt(error.constraint)} (got {shown})"


def _kind(document: Any) -> str:
    """What a YAML document that is not a mapping is, in words."""
    if isinstance(document, list):
        return f"a list of {len(document)} items"
    if isinstance(document, bool):
        return "true or false"
    if isinstance(document, (int, float)):
        return "a number"
    if isinstance(document, str):
        return "one text"
    return f"a {type(document).__name__}"


def _path_order(item: tuple[tuple[Any, ...], str, bool]) -> list[tuple[int, int, str]]:
    """Sorts errors by path, list indexes as numbers (rule 2 before rule 10)."""
    return [(0, step, "") if isinstance(step, int) else (1, 0, str(step)) for step in item[0]]
