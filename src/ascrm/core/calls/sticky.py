"""The last operator: who answered a caller's last connected call, kept per caller for `sticky.days`.

Two built-in maps keyed by the caller's number, read by rules as `{last_ext[AN]}` or `{AN: {in: last_dn}}`:
`last_ext`, the short number (extension) a `ShortTransfer` connected the caller to, and `last_dn`, the
full number a `Transfer` connected them to (Result 1280). The destination is the event's own EXT1/EXT2
or DN1, else the one its transfer started with (`GoToShortTransfer`, `OperatorTransfer`, `GoToTransfer`).
The memory store keeps them in this process; the Redis store in Redis, for every replica.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import RESULT_CONNECTED, CallEvent, EventType

KINDS: Final = ("last_ext", "last_dn")
MAX_NUMBER_CHARS: Final = 64  # a caller's number or a destination kept; longer ones are not remembered
_STARTS: Final = {
    "last_ext": ((EventType.GoToShortTransfer, "EXT1"), (EventType.OperatorTransfer, "EXT2")),
    "last_dn": ((EventType.GoToTransfer, "DN1"),),
}


@dataclass(frozen=True, slots=True)
class StickySettings:
    """The `sticky` section: how long a caller's last operator is remembered, and how many at most."""

    days: int = 30  # 0: nothing is remembered
    max_entries: int = 100_000  # per map; the oldest go first (about 22 MiB a map at most)


class Sticky(Protocol):
    """Where the last operators are kept."""

    async def get(self, kind: str, caller: str) -> str | None:
        """The destination of the caller's last connected call of this kind, or None."""
        ...

    def put(self, kind: str, caller: str, destination: str) -> None:
        """Remember it (written without the answer waiting)."""
        ...


def caller_key(number: str | None) -> str | None:
    """A caller's number as the maps are keyed: its digits (a leading + dropped), None when unusable."""
    if not number:
        return None
    key = number[1:] if number.startswith("+") else number
    return key if key and len(key) <= MAX_NUMBER_CHARS else None


def connected_to(event: CallEvent, call: CallState) -> tuple[str, str] | None:
    """(map, destination) when event says the call was connected to an operator, else None."""
    if event.result != RESULT_CONNECTED:
        return None
    return transfer_destination(event, call)


def transfer_destination(event: CallEvent, call: CallState) -> tuple[str, str] | None:
    """(map, destination) of a transfer's result event (ShortTransfer, Transfer) whatever its result."""
    if event.event_type == EventType.ShortTransfer:
        kind, own = "last_ext", event.ext1 or event.ext2
    elif event.event_type == EventType.Transfer:
        kind, own = "last_dn", event.dn1
    else:
        return None
    destination = own or _started(call, kind)
    if not destination or len(destination) > MAX_NUMBER_CHARS:
        return None
    return kind, destination


def _started(call: CallState, kind: str) -> str | None:
    """The destination the call's latest transfer of this kind started with."""
    starts: dict[int, str] = {int(code): name for code, name in _STARTS[kind]}
    for code, _, news in reversed(call.events):
        field = starts.get(int(code))
        if field is not None and news:
            values = dict(zip(news[::2], news[1::2], strict=True))
            if values.get(field):
                return values[field]
    return None


class MemorySticky:
    """The last operators in this process: at most max_entries per map, each for `days`."""

    def __init__(self, settings: StickySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = settings.days * 86400.0
        self._max = settings.max_entries
        self._clock = clock
        self._maps: dict[str, OrderedDict[str, tuple[str, float]]] = {kind: OrderedDict() for kind in KINDS}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._maps.values())

    async def get(self, kind: str, caller: str) -> str | None:
        """The destination remembered for caller, or None (also once it is older than `days`)."""
        entry = self._maps[kind].get(caller)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._maps[kind][caller]
            return None
        return entry[0]

    def put(self, kind: str, caller: str, destination: str) -> None:
        """Remember destination for caller (the oldest entry goes past max_entries)."""
        if self._ttl <= 0:
            return
        entries = self._maps[kind]
        entries.pop(caller, None)
        entries[caller] = (destination, self._clock() + self._ttl)
        while len(entries) > self._max:
            entries.popitem(last=False)
