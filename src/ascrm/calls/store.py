"""What every call store offers (in memory, in Redis), and its errors."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ascrm.calls.state import CallState, Command, DecisionRecord
from ascrm.errors import AscrmError
from ascrm.protocol import Action, CallEvent


class StoreError(AscrmError):
    """Base of the call stores' errors."""


class StoreUnavailableError(StoreError):
    """The store did not answer within its budget (down, refusing, or hung)."""


class UnknownCallError(StoreError):
    """No live (or recently ended) call has this CallID."""


class CallEndedError(StoreError):
    """The call has ended: it takes no more commands."""


class CallStore(Protocol):
    """Call state keyed by CallID; each method is atomic for its call."""

    async def update(self, event: CallEvent, now: datetime) -> CallState:
        """Apply a platform event to its call (a new call for an unknown CallID); the new state."""
        ...

    async def poll(self, call_id: int, now: datetime) -> tuple[CallState | None, Command | None]:
        """Record a GET poll; the call (None if unknown) and its oldest pending command, now taken."""
        ...

    async def record(self, call_id: int, record: DecisionRecord) -> None:
        """Remember an answer that carried an action."""
        ...

    async def get(self, call_id: int) -> CallState | None:
        """A call's state, or None."""
        ...

    async def calls(
        self,
        *,
        an: str | None = None,
        un: str | None = None,
        state: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[CallState], int]:
        """Calls matching the filters, most recently updated first, and how many match in all."""
        ...

    async def push(self, call_id: int, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command for a live call; it and its 1-based queue position (UnknownCallError, CallEndedError)."""
        ...

    async def cancel(self, call_id: int, command_id: int) -> bool:
        """Drop a pending command; whether it was still pending (UnknownCallError)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
