"""The calls this replica folded last, so that a script returns only the entries added since.

Folding a call's whole hash is most of what a Redis answer costs in Python. A call's entries are
numbered and never change once written, so a replica that has folded a call up to entry n needs only
the entries after n, the pending commands and the small fields. The scripts are told the n and the
incarnation (the hash's `i`, a token written when the hash is made: a call that expired and came back
under its CallID is another hash) of the state held here; they answer with those alone when they
still apply (entries after n kept, n not covered by a newer snapshot), else with the whole hash.

The states are bounded in bytes (an estimate from what the call holds, at least its real size): the
least recently used go first. A state held here is never handed out: callers get a copy, so a state
changed by an answer never changes what a later fold starts from.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ascrm.core.calls.state import CallState

# What a state costs beyond its history: the record, its lists, its times and strings (measured with
# tracemalloc: 620 bytes for a call with one event, one decision and a poll), with room to spare.
_STATE_BYTES: Final = 1024
_BLOCK_BYTES: Final = 64 * 2  # a history block is 64 bytes of text; its tuples and strings cost as much again
_DECISION_BYTES: Final = 256  # a DecisionRecord, its strings and its list slot


@dataclass(frozen=True, slots=True)
class Held:
    """A call folded up to entry `last` of the hash incarnation `incarnation`; never changed."""

    incarnation: bytes
    last: int
    state: CallState
    size: int


def state_bytes(call: CallState) -> int:
    """An estimate of the memory a state takes, at least its real size."""
    return _STATE_BYTES + _BLOCK_BYTES * call.history_blocks + _DECISION_BYTES * len(call.decisions)


class FoldCache:
    """Folded calls by CallID, within a byte budget (0: none kept)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # least recently used first (an OrderedDict: a plain dict's oldest key is found by skipping every
        # key dropped before it, which made each eviction of a full cache cost microseconds)
        self._held: OrderedDict[int, Held] = OrderedDict()
        self.size = 0  # bytes, as state_bytes() estimates them
        self.hits = 0  # folds that started from a state held here
        self.misses = 0  # folds of a whole hash

    def __len__(self) -> int:
        return len(self._held)

    def get(self, call_id: int) -> Held | None:
        """The state held for a call (now the most recently used), or None."""
        held = self._held.get(call_id)
        if held is not None:
            self._held.move_to_end(call_id)
        return held

    def put(self, call_id: int, incarnation: bytes, last: int, call: CallState) -> None:
        """Hold a copy of call, folded up to entry last, unless a newer fold of that hash is held; an
        ended call is let go (it is polled no more)."""
        if not self._max_bytes:
            return
        held = self._held.get(call_id)
        if held is not None and held.incarnation == incarnation and held.last > last:
            return  # a later answer of this process folded more of it first
        if call.ended_at is not None:
            self.drop(call_id)
            return
        size = state_bytes(call)
        if size > self._max_bytes:
            self.drop(call_id)
            return
        self.drop(call_id)
        self._held[call_id] = Held(incarnation, last, call.copy(), size)
        self.size += size
        while self.size > self._max_bytes:
            self.size -= self._held.popitem(last=False)[1].size

    def drop(self, call_id: int) -> None:
        """Let a call's state go."""
        held = self._held.pop(call_id, None)
        if held is not None:
            self.size -= held.size

    def clear(self) -> None:
        """Let every state go."""
        self._held.clear()
        self.size = 0
