"""The look-ups' answers kept in one process: bounded in entries, the least recently used go first."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ascrm.core.lookups.request import LookupRequest
from ascrm.core.lookups.source import Outcome

CacheKey = tuple[str, LookupRequest]  # (source, the request: equal requests are one entry)


@dataclass(frozen=True, slots=True)
class Entry:
    """An answer (None: a miss), reused until fresh_until; a found value also answers failures until stale_until."""

    value: str | None
    fresh_until: float
    stale_until: float
    hit: Outcome = field(init=False, repr=False, compare=False)  # the outcome of a look-up it answers

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit", Outcome(self.value, "hit", 0.0))  # made once, not per answer

    def fresh(self, now: float) -> bool:
        """Whether it answers a look-up now."""
        return now < self.fresh_until

    def stale_value(self, now: float) -> str | None:
        """The last good value when a request failed now (None: none young enough)."""
        return self.value if now < self.stale_until else None


class LocalCache:
    """Entries by (source, request key), at most max_entries."""

    def __init__(self, max_entries: int) -> None:
        self._max = max(0, max_entries)
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float) -> Entry | None:
        """The entry of key (now the most recently used), or None; one useful no more is let go."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not entry.fresh(now) and entry.stale_value(now) is None:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def fresh(self, key: CacheKey, now: float) -> Entry | None:
        """The entry of key when it is fresh (now the most recently used), else None (nothing let go)."""
        entry = self._entries.get(key)
        if entry is None or now >= entry.fresh_until:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: Entry) -> None:
        """Keep entry for key; the least recently used go past max_entries."""
        if not self._max:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
