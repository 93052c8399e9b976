"""What an outbox does: the SQLite one (one process) and the Redis one (replicas) both do this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ascrm.core.notify.message import Leased, Listed, Notification, States


class Outbox(Protocol):
    """Notifications stored durably until delivered, retried on a schedule, or failed for good.

    Every method is a coroutine that never blocks the event loop; a failure of the storage itself is an
    OutboxError. Times are Unix seconds (the delivery loop's clock, passed in)."""

    async def put(self, notifications: Sequence[Notification]) -> int:
        """Store them, due now; a key stored before is left as it is (not stored twice, even after its
        delivery). The number newly stored. OutboxFullError when max_pending are waiting (none stored)."""
        ...

    async def lease(self, limit: int, now: float) -> list[Leased]:
        """At most limit notifications due at now, handed to this process alone until settled (or, with
        replicas, until this process has held them claim_after seconds without settling: it died)."""
        ...

    async def delivered(self, leased: Leased) -> None:
        """A lease delivered: it is gone from the outbox (its key stays known, so it is never stored again)."""
        ...

    async def retry_at(self, leased: Leased, due: float, error: str) -> None:
        """A lease not delivered yet: tried again at due, its attempts one more, error kept for the admin."""
        ...

    async def fail(self, leased: Leased, error: str) -> None:
        """A lease given up on: it moves to the failed list (the admin API's dead letters)."""
        ...

    async def listing(self, state: States, limit: int, offset: int) -> list[Listed]:
        """Notifications in state, oldest first, paged."""
        ...

    async def retry(self, key: str, now: float) -> bool:
        """A failed notification made pending again, due now, its attempts and deadline counted afresh;
        False when key names no failed notification."""
        ...

    async def pending_counts(self) -> Mapping[str, int]:
        """Pending notifications by target name."""
        ...

    async def close(self) -> None:
        """Let go of the file or connections (stored notifications stay)."""
        ...
