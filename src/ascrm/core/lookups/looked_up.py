"""What the rules read of looked-up sources while a decision is made, and what they raise for one not
looked up yet (rules/sources.py compiles the sources; deciding.py looks them up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from ascrm.core.calls.state import CallState
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.lookups.source import SourceSettings
from ascrm.core.protocol import CallEvent


class LookedUpValues(Protocol):
    """The sources' values of the decision being made."""

    def value(self, name: str) -> str | None:
        """Source (or `<map>:<key>`) name's value, None when missing; NeedsLookup when not looked up yet."""
        ...


LOOKED_UP: ContextVar[LookedUpValues] = ContextVar("looked_up")
"""The sources' values for the decision being made (set by whoever asks the rules)."""

Build = Callable[[CallEvent | None, CallState], "tuple[LookupRequest, Extract] | None"]


class NeedsLookup(Exception):  # noqa: N818 - a signal, not an error
    """A condition or template reads a source that has not been looked up for this decision."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class CompiledSource:
    """A source ready to be asked: its look-up's settings and how its request is made for a call."""

    name: str
    kind: str
    settings: SourceSettings
    build: Build  # the request and how to read its answer; None when a placeholder has no value


def source_getter(name: str) -> Callable[[CallEvent | None, CallState], str | None]:
    """How a condition or template reads source name: its looked-up value, or NeedsLookup."""

    def read(event: CallEvent | None, call: CallState) -> str | None:
        values = LOOKED_UP.get(None)
        if values is None:
            raise NeedsLookup(name)
        return values.value(name)

    return read


STICKY_MAPS = ("last_ext", "last_dn")  # the built-in maps of the last operator (calls/sticky.py)


class LiveMap(Mapping[str, str]):
    """A built-in map whose values are looked up while deciding (`{last_ext[AN]}`, `{in: last_dn}`): a key
    not looked up yet raises NeedsLookup("<map>:<key>")."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value looked up for key (None: none)."""
        values = LOOKED_UP.get(None)
        wanted = f"{self.name}:{key}"
        if values is None:
            raise NeedsLookup(wanted)
        return values.value(wanted)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def sticky_lookup(name: str) -> tuple[str, str] | None:
    """(map, key) of a NeedsLookup name of a LiveMap, else None."""
    kind, colon, key = name.partition(":")
    return (kind, key) if colon and kind in STICKY_MAPS else None
