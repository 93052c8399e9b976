"""The shape of a rule file, checked with cerberus before the rules are compiled."""

from __future__ import annotations

from typing import Any

import cerberus

from ascrm.rules.excerpt import excerpt

NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_SCALAR = ["string", "integer"]

_FILE_REF = {"file": {"type": "string", "required": True, "empty": False}}
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
FILE: dict[str, Any] = {
    "timezone": {"type": "string", "empty": False},
    "normalize": {"type": "string", "allowed": ["none", "ru"]},
    "schedules": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict"},
    },
    "lists": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {
            "anyof": [
                {"type": "list", "schema": {"type": _SCALAR}},
                {"type": "dict", "schema": _FILE_REF},
            ]
        },
    },
    "maps": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string", "regex": NAME},
        "valuesrules": {"type": "dict"},
    },
    "rules": {"type": "list", "nullable": True, "schema": {"type": "dict", "schema": RULE}},  # `rules:` alone: none
}


def shape_errors(document: Any) -> list[tuple[tuple[Any, ...], str, bool]]:
    """(path, message, about_the_key) for each way document departs from FILE."""
    if not isinstance(document, dict):  # not a rule file at all: say what it is, quote none of it
        message = "a rule file is a mapping with keys such as timezone, schedules, lists, maps, rules"
        return [((), f"{message}; this file is {_kind(document)}", False)]
    return schema_errors(document, FILE, {("rules",): "rule"})


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
        found.append((path, _message(error, items), error.code == cerberus.errors.UNKNOWN_FIELD.code))
    return sorted(found, key=lambda item: [str(step) for step in item[0]])


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


def _message(error: Any, items: dict[tuple[Any, ...], str]) -> str:
    value, rule = error.value, error.rule
    shown = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else excerpt(value)
    path = error.document_path
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
    if rule == "anyof" and key == "on":
        return f"'on' takes an event name, a code, 'poll', or a list of them, not {shown}"
    if rule == "anyof":
        return f'{excerpt(key)}: a list of numbers ("7916*" for a prefix) or {{file: path}}, not {shown}'
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
