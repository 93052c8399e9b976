"""A decision's picks from pools, and what a transfer's result tells the pools (rest, answered)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final

from ascrm.core.calls.state import CallState
from ascrm.core.calls.sticky import transfer_destination
from ascrm.core.protocol import RESULT_BUSY, RESULT_CONNECTED, RESULT_NO_ANSWER, Action, CallEvent

if TYPE_CHECKING:
    from ascrm.core.pools.keeper import PoolKeeper
    from ascrm.core.rules.pools import Pool


PREFIX: Final = "pool:"  # a pool's name as the rules read it through LOOKED_UP: "pool:sales"
_TRANSFERS: Final = frozenset({Action.TransferEXT, Action.TransferDN, Action.TransferDNRec})
_RESTING_RESULTS: Final = frozenset({RESULT_BUSY, RESULT_NO_ANSWER})


def pool_lookup(name: str) -> str | None:
    """The pool's name in a NeedsLookup name ("pool:sales"), else None."""
    return name[len(PREFIX) :] if name.startswith(PREFIX) else None


def offered_to(call: CallState, pool: Pool) -> frozenset[str]:
    """The members of pool this call has been offered: its answers' params that are members."""
    params = {record.param for record in call.decisions}
    return frozenset(member.to for member in pool.members if member.to in params)


class Picker:
    """The picks of one decision at moment now, through keeper."""

    __slots__ = ("_keeper", "_now", "_pools")

    def __init__(self, pools: Mapping[str, Pool], keeper: PoolKeeper | None, now: datetime) -> None:
        self._pools, self._keeper, self._now = pools, keeper, now

    @property
    def count(self) -> int:
        """How many pools there are to pick from."""
        return len(self._pools)

    async def pick(self, name: str, call: CallState, deadline: float) -> tuple[str | None, str]:
        """(member, outcome): a member not offered to call yet, on schedule and not resting; None with the
        reason when there is none (`none left`, `all resting`, `unavailable`). Past deadline the keeper
        picks from this process's state (no waiting)."""
        pool = self._pools.get(name)
        if pool is None or self._keeper is None:
            return None, "unavailable"
        tried = offered_to(call, pool)
        candidates = [
            member
            for member in pool.members
            if member.to not in tried and (member.hours is None or member.hours.contains(self._now))
        ]
        if not candidates:
            return None, "none left"
        member = await self._keeper.pick(pool, candidates, deadline)
        return member, ("picked " + member if member is not None else "all resting")


def _last_offered(call: CallState) -> str | None:
    """The destination of the call's latest transfer answer, when the result event does not name it."""
    for record in reversed(call.decisions):
        if record.action in _TRANSFERS:
            return record.param
    return None


def note_transfer(pools: Mapping[str, Pool], keeper: PoolKeeper, event: CallEvent, call: CallState) -> None:
    """A transfer's result: busy or no answer rests its destination in every pool it is a member of;
    connected counts as answered in the pools that offered it to this call."""
    if event.result not in _RESTING_RESULTS and event.result != RESULT_CONNECTED:
        return
    found = transfer_destination(event, call)
    destination = found[1] if found is not None else _last_offered(call)
    if destination is None:
        return
    for pool in pools.values():
        if not pool.has(destination):
            continue
        if event.result == RESULT_CONNECTED:
            if destination in offered_to(call, pool):
                keeper.answered(pool, destination)
        else:
            keeper.rest(pool, destination)
