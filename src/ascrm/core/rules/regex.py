"""Rule regexes on RE2: a match takes time linear in the value, whatever the pattern.

Python's `re` backtracks, so one careless pattern (`^(\\d+)+$`) on one long value stalls the event
loop, and every call with it, for seconds. RE2 (google-re2) never backtracks; patterns it cannot
run that way (backreferences, lookaround, possessive and atomic groups) are refused when the rules
are loaded. The hot path asks RE2's own matcher for a yes or no, skipping the `re`-like wrapper's
Match objects, and answers patterns that are plain text (`555`, `^7916`, `^2005$`) with str methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

from ascrm.core.rules.excerpt import excerpt

_SPECIAL = frozenset("\\.^$*+?{}[]|()")
# RE2 matches in time linear in the value times the size of the pattern's program: `\d{1000}` (1,004
# instructions) searches a 64 KiB value in about 50 ms, `\d{1000}` five times over in 0.4 s. A number
# pattern takes tens.
MAX_PROGRAM_SIZE = 1000
_HINT = "RE2 syntax: no backreferences, lookahead/lookbehind, possessive or atomic groups; write \\z, not \\Z"


class PatternError(ValueError):
    """A rule regex RE2 cannot compile; message says why, in RE2's words."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"bad regex {excerpt(pattern, 80)}: {reason}")
        self.pattern, self.reason = pattern, reason


@dataclass(frozen=True, slots=True)
class RulePattern:
    """A compiled rule regex: search(value) says whether it matches anywhere in value."""

    text: str
    search: Callable[[str], bool]


def compile_pattern(text: str) -> RulePattern:
    """Compile a rule regex for RE2; PatternError when RE2 cannot run it."""
    regexp = _compile(text)  # also for plain text: RE2 is the judge of what a pattern is
    raw = getattr(regexp, "_regexp", None)
    size = raw.ProgramSize() if raw is not None and hasattr(raw, "ProgramSize") else 0
    if size > MAX_PROGRAM_SIZE:
        limit = f"at most {MAX_PROGRAM_SIZE} (use smaller repeat counts)"
        raise PatternError(text, f"too large: {size} RE2 instructions, {limit}")
    literal = _literal_search(text)
    return RulePattern(text, literal if literal is not None else _searcher(regexp))


def _compile(text: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # our error names the file and line; RE2's own goes to stderr
    options.never_capture = True  # a yes or no is all a condition needs
    try:
        return re2.compile(text, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "cannot compile"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(text, f"{reason} ({_HINT})") from None


def _searcher(regexp: Any) -> Callable[[str], bool]:
    """RE2's matcher called directly: about 1 µs where the wrapper's search() costs about 10."""
    raw = getattr(regexp, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if raw is None or anchor is None or not hasattr(raw, "Match"):  # another google-re2 layout
        wrapped = regexp.search
        return lambda value: wrapped(value) is not None
    match = raw.Match

    def search(value: str) -> bool:
        data = value.encode()
        return bool(match(anchor, data, 0, len(data))[0][0] >= 0)

    return search


def _literal_search(text: str) -> Callable[[str], bool] | None:
    """The same answer as RE2's for a pattern that is plain text, optionally anchored; else None."""
    start = text.startswith("^")
    end = text.endswith("$") and len(text) > int(start)
    body = text[int(start) : len(text) - int(end)]
    if not body or any(char in _SPECIAL for char in body):
        return None
    if start and end:
        return body.__eq__
    if start:
        return lambda value: value.startswith(body)
    if end:
        return lambda value: value.endswith(body)
    return lambda value: body in value
