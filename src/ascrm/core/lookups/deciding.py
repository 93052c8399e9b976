"""Deciding with look-ups: the rules are asked, and asked again once each source they need is looked up.

The engine does no I/O: a rule reads a source's value through LOOKED_UP, here a Looking. A value this
process's cache holds fresh is read on the spot; any other raises NeedsLookup, the source is looked up
(within what is left of the decision's budget) and the rules are asked again with its value, at most
once per source; rules before the one that needed it do not read it, so they give the same answer
again. Past the budget a pending look-up counts as failed (its value is missing) and the answer goes
out. A rule set without sources is asked once, as before, and pays nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, Protocol

from ascrm.core.calls.state import CallState
from ascrm.core.calls.sticky import caller_key
from ascrm.core.calls.store import StoreError
from ascrm.core.lookups.looked_up import LOOKED_UP, CompiledSource, NeedsLookup, sticky_lookup
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.lookups.source import Outcome, SourceSettings
from ascrm.core.pools.picking import Picker, pool_lookup
from ascrm.core.protocol import NO_ACTION, CallEvent, Decision


class Resolver(Protocol):
    """What performs look-ups (lookups.Lookups in the service; given values in the rule tools)."""

    async def look_up(
        self, source: SourceSettings, request: LookupRequest, extract: Extract, *, deadline: float
    ) -> Outcome:
        """The value of one look-up, within deadline (the running loop's clock)."""
        ...

    def cached(self, source: SourceSettings, request: LookupRequest) -> Outcome | None:
        """The value of one look-up when it is known at once (a fresh cached answer), else None."""
        ...


class Used(NamedTuple):
    """A look-up a decision used: the source, how its value was found (an Outcome's outcome)."""

    source: str
    outcome: str


DecideOnce = Callable[[], Decision]  # the rules asked once, with LOOKED_UP as set
StickyReader = Callable[[str, str], Awaitable["str | None"]]  # (map, caller) -> the last operator
_STICKY_LOOKUPS = 20  # a decision's look-ups of the last operator at most (a map and a field each)


class Looking:
    """The look-ups of one decision: values found so far, within one budget; the rules' LOOKED_UP while
    they are asked (a source whose answer is cached fresh is read on the spot)."""

    __slots__ = ("_asked", "_built", "_deadline", "_picker", "_resolver", "_sources", "_sticky", "found", "used")

    def __init__(
        self,
        sources: Mapping[str, Any],
        resolver: Resolver | None,
        budget: float,
        sticky: StickyReader | None = None,
        picker: Picker | None = None,
    ) -> None:
        self._sources = sources
        self._picker = picker
        self._resolver = resolver
        self._sticky = sticky
        self._deadline = asyncio.get_running_loop().time() + budget
        self._asked: tuple[CallEvent | None, CallState] | None = None  # the call the rules are deciding
        self._built: dict[str, tuple[LookupRequest, Extract] | None] = {}  # requests made, not yet sent
        self.found: dict[str, str | None] = {}
        self.used: list[Used] = []

    def value(self, name: str) -> str | None:
        """Source name's value (None: missing), known or cached fresh; else NeedsLookup."""
        found = self.found
        if name in found or self._peek(name):
            return found[name]
        raise NeedsLookup(name)

    def _peek(self, name: str) -> bool:
        """Whether source name's value is known without waiting (then it is in found)."""
        source: CompiledSource | None = self._sources.get(name)
        if source is None or self._asked is None or self._resolver is None:
            return False
        built = source.build(*self._asked)
        outcome = None if built is None else self._resolver.cached(source.settings, built[0])
        if outcome is None:
            self._built[name] = built  # find() sends it (or, None, knows there is nothing to ask)
            return False
        self.found[name] = outcome.value
        self.used.append(Used(name, outcome.outcome))
        return True

    async def find(self, name: str, event: CallEvent | None, call: CallState) -> None:
        """Look source name up for this call (missing when it cannot be)."""
        loop = asyncio.get_running_loop()
        live = sticky_lookup(name)
        if live is not None:
            self.found[name] = await self._last_operator(*live)
            return
        pool = pool_lookup(name)
        if pool is not None:
            self.found[name] = await self._pick(pool, call)
            return
        source: CompiledSource = self._sources[name]
        built = self._built.pop(name) if name in self._built else source.build(event, call)
        if built is None:  # a placeholder of its request has no value: nothing to ask
            outcome = Outcome(None, "miss", 0.0)
        elif self._resolver is None or loop.time() >= self._deadline:
            outcome = Outcome(None, "timeout" if self._resolver is not None else "error", 0.0)
        else:
            request, extract = built
            outcome = await self._resolver.look_up(source.settings, request, extract, deadline=self._deadline)
        self.found[name] = outcome.value
        self.used.append(Used(name, outcome.outcome))

    async def _pick(self, pool: str, call: CallState) -> str | None:
        """A member of the pool for this call (pools/picking.py), its outcome noted as `pool.NAME`."""
        value, outcome = None, "unavailable"
        if self._picker is not None:
            value, outcome = await self._picker.pick(pool, call, self._deadline)
        self.used.append(Used(f"pool.{pool}", outcome))
        return value

    async def _last_operator(self, kind: str, number: str) -> str | None:
        caller = caller_key(number)
        outcome, value = "miss", None
        if self._sticky is None or caller is None:
            pass
        elif asyncio.get_running_loop().time() >= self._deadline:
            outcome = "timeout"
        else:
            try:
                async with asyncio.timeout_at(self._deadline):
                    value = await self._sticky(kind, caller)
                outcome = "hit" if value is not None else "miss"
            except TimeoutError:
                outcome = "timeout"
            except StoreError:
                outcome = "error"
        self.used.append(Used(kind, outcome))
        return value

    def ask(self, decide: DecideOnce, event: CallEvent | None, call: CallState) -> Decision | NeedsLookup:
        """The rules' decision for call with the values found so far, or the look-up they need next."""
        self._asked = (event, call)
        token = LOOKED_UP.set(self)
        try:
            return decide()
        except NeedsLookup as need:
            known = need.name in self._sources or sticky_lookup(need.name) is not None
            known = known or (pool_lookup(need.name) is not None and self._picker is not None)
            if need.name in self.found or not known:  # cannot happen: never loop
                return NO_ACTION
            return need
        finally:
            LOOKED_UP.reset(token)
            self._asked = None

    async def finish(self, need: NeedsLookup, decide: DecideOnce, event: CallEvent | None, call: CallState) -> Decision:
        """The decision when ask() needed a look-up: need, and each one the rules need next, are looked up
        and the rules asked again (ask() and finish() together ask them rounds() times at most)."""
        for _ in range(rounds(self._sources, self._picker) - 1):
            await self.find(need.name, event, call)
            answer = self.ask(decide, event, call)
            if not isinstance(answer, NeedsLookup):
                return answer
            need = answer
        return NO_ACTION


def rounds(sources: Mapping[str, Any], picker: Picker | None = None) -> int:
    """How many times a decision asks the rules at most: once, and once more per look-up and pool."""
    return len(sources) + _STICKY_LOOKUPS + 1 + (0 if picker is None else picker.count)
