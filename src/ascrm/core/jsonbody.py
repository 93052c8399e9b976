"""Request bodies read as JSON: nesting bounded before any parser runs, integers past 64 bits read, and
strings that are not valid Unicode (a lone surrogate, written as an escape) marked unreadable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_DEPTH: Final = 32  # arrays and objects inside each other; a CRMDData or a command body has 1


class NestingError(ValueError):
    """The body nests arrays and objects deeper than MAX_DEPTH."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")


@dataclass(frozen=True, slots=True)
class UnreadableText:
    """A JSON string that is not valid Unicode: kept out of call state, answers and logs."""

    shown: str  # the text with its surrogates written as \\uXXXX escapes, safe to show

    def __str__(self) -> str:
        return self.shown


UNREADABLE_REASON: Final = "not valid Unicode (a lone surrogate)"


def load_json(body: bytes) -> Any:
    """Decode a JSON request body; ValueError (NestingError for deep nesting) says why it is refused.

    orjson reads almost every body; what it refuses is read again by the standard library, which also
    takes integers past 64 bits (a CRMDData field may then reject them) and lone surrogate escapes,
    which come back as UnreadableText.
    """
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(body):
        raise NestingError
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _readable(json.loads(body))


# A JSON string (brackets inside it do not nest anything), or a bracket.
_TOKENS: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _too_deep(body: bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_DEPTH (unbalanced ones count as opened)."""
    depth = 0
    for match in _TOKENS.finditer(body):
        first = body[match.start()]
        if first in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif first in b"]}":
            depth -= 1
    return False


def _readable(value: Any) -> Any:
    """value with every string that holds a surrogate (keys included) replaced by UnreadableText.

    Recursion is bounded: load_json refused deeper bodies before parsing."""
    if isinstance(value, str):
        if value.isascii() or _SURROGATE.search(value) is None:
            return value
        return UnreadableText(value.encode("utf-8", "backslashreplace").decode("utf-8"))
    if isinstance(value, list):
        return [_readable(item) for item in value]
    if isinstance(value, dict):
        return {_readable(key): _readable(item) for key, item in value.items()}
    return value
