"""A rule file's `sources:`: values looked up from a CRM, read by conditions and templates like fields.

A source is compiled at load time into the settings of its look-up and a function that renders the
request for a call (the URL's placeholders percent-encoded, a POST body's strings JSON-encoded,
`${VAR}` taken from the environment when the rules load). The engine stays free of I/O: a condition
or template that reads a source not looked up yet raises NeedsLookup, the caller looks it up and asks
the rules again with the value in LOOKED_UP (None: missing). A rule's conditions on sources are asked
after its other conditions, so a source is asked only when the rest of its rule holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from ascrm.core.lookups.looked_up import CompiledSource, NeedsLookup, source_getter
from ascrm.core.lookups.request import Extract
from ascrm.core.lookups.source import SourceSettings
from ascrm.core.rules.durations import duration_seconds
from ascrm.core.rules.excerpt import excerpt

__all__ = ["CompiledSource", "NeedsLookup", "SourceError", "source_getter"]

KINDS: Final = ("http", "bitrix24", "amocrm", "retailcrm")  # the generic form and the CRM presets
MAX_VALUE_CHARS: Final = 1024  # a looked-up value is kept to this many characters
_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BOUNDS: Final = {  # (least, most) seconds
    "timeout": (0.001, 10.0),
    "ttl": (0.0, 7 * 86400.0),
    "miss_ttl": (0.0, 7 * 86400.0),
    "stale": (0.0, 30 * 86400.0),
    "cooldown": (0.1, 3600.0),
}


class SourceError(Exception):
    """A source is wrong; path is relative to its mapping."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def seconds(value: Any, key: str) -> float:
    """A duration written with its unit (300ms, 2s, 10m, 1h, 1d) in seconds, within the key's bounds."""
    amount = duration_seconds(value)
    if amount is None:
        raise SourceError((), f"{key}: {excerpt(value)} is not a duration with its unit (300ms, 2s, 10m, 1h, 1d)")
    least, most = _BOUNDS[key]
    if not least <= amount <= most:
        raise SourceError((), f"{key}: {excerpt(value)} is outside {least:g}-{most:g} seconds")
    return amount


def per_second(value: Any) -> float:
    """A rate written as 5/s, 100/m or 1000/h, in requests per second (at most 10,000/s)."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise SourceError((), f"rate: {excerpt(value)} is not a rate such as 5/s, 100/m or 1000/h")
    rate = float(match.group(1)) / {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    if not 0 < rate <= 10_000:
        raise SourceError((), f"rate: {excerpt(value)} is outside 1/h-10000/s")
    return rate


def expand(text: str, where: tuple[Any, ...], env: Mapping[str, str]) -> str:
    """text with ${VAR} (or ${VAR:-default}) taken from the environment; SourceError names a variable
    that is not set (never a value: they hold tokens)."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise SourceError(where, f"the environment variable {name} is not set (write ${{{name}:-default}} for one)")

    return _VARIABLE.sub(value, text)


def extractor(path: str) -> Extract:
    """The value at a dotted path of a JSON answer (result.extension; items.0.id: a list's index): text
    or a number, as text; anything else, or nothing there, is no value."""
    steps = tuple(int(step) if step.isdigit() else step for step in path.split("."))

    def extract(answer: Any) -> str | None:
        for step in steps:
            if isinstance(step, int) and isinstance(answer, list) and step < len(answer):
                answer = answer[step]
            elif isinstance(answer, dict) and str(step) in answer:
                answer = answer[str(step)]
            else:
                return None
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            return None
        text = str(answer)[:MAX_VALUE_CHARS]
        return text or None

    return extract


def settings_of(name: str, spec: Mapping[str, Any], *, rate: float | None = None, burst: int = 1) -> SourceSettings:
    """The look-up settings a source's mapping gives (rate and burst: the kind's defaults)."""
    cache = spec.get("cache") or {}
    breaker = spec.get("breaker") or {}
    values: dict[str, Any] = {"name": name}
    for key, given in (("timeout", spec), ("ttl", cache), ("miss_ttl", cache), ("stale", cache)):
        if key in given:
            try:
                values[key] = seconds(given[key], key)
            except SourceError as exc:
                raise SourceError(((key,) if given is spec else ("cache", key)), exc.message) from None
    if "rate" in spec:
        try:
            rate = per_second(spec["rate"])
        except SourceError as exc:
            raise SourceError(("rate",), exc.message) from None
        burst = max(1, round(rate)) if "burst" not in spec else burst
    burst = int(spec.get("burst", burst))
    if "cooldown" in breaker:
        try:
            values["cooldown"] = seconds(breaker["cooldown"], "cooldown")
        except SourceError as exc:
            raise SourceError(("breaker", "cooldown"), exc.message) from None
    if "failures" in breaker:
        values["failures"] = int(breaker["failures"])
    return SourceSettings(**values, rate=rate, burst=burst)


def check_url(url: str, where: tuple[Any, ...]) -> None:
    """An http(s) URL with a host (checked once the environment's values are in)."""
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(where, "the url is not an http:// or https:// URL with a host")


def json_body(spec: Any) -> bytes:
    """A literal POST body."""
    return orjson.dumps(spec)
