"""Failed logins logged as aggregated `auth_failed` lines: one per client and user name per interval."""

from __future__ import annotations

import structlog

log = structlog.get_logger("ascrm.auth")


class FailureTally:
    """Failed and refused logins by (role, client, user) since the last flush, for at most max_keys keys.

    Attempts of keys beyond max_keys are only counted, in one `auth_failed_untracked` line, so an
    attacker with many addresses or user names cannot grow it.
    """

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # -> [failed, throttled]
        self._untracked = 0

    def add(self, role: str, client: str, user: str, *, throttled: bool = False) -> None:
        """Count one failed (checked and wrong) or throttled (refused unchecked) attempt."""
        key = (role, client, user)
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= self._max_keys:
                self._untracked += 1
                return
            counts = self._counts[key] = [0, 0]
        counts[1 if throttled else 0] += 1

    def flush(self, interval: float) -> int:
        """Log what was counted since the last flush, and start over; the number of lines written."""
        counts, untracked = self._counts, self._untracked
        self._counts, self._untracked = {}, 0
        for (role, client, user), (failed, throttled) in counts.items():
            log.warning(
                "auth_failed",
                role=role,
                client=client,
                user=user,
                failures=failed,
                throttled=throttled,
                interval_s=interval,
            )
        if untracked:
            log.warning("auth_failed_untracked", attempts=untracked, interval_s=interval)
        return len(counts) + bool(untracked)
