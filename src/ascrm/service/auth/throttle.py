"""Failure budgets: how many failed logins a key (a client address, a user name) had in a window."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class _Window:
    """One key's failures since start (mutable: bumped in place on the hot path)."""

    __slots__ = ("count", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0


class FailureBudget:
    """At most limit failures per key in a fixed window of `window` seconds, for at most max_keys keys.

    Memory is bounded: past max_keys, the key whose last failure is the oldest is forgotten (an
    attacker with many keys can only make ascrm forget keys that went quiet).
    """

    def __init__(self, limit: int, window: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._window = window
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def count(self, key: str) -> int:
        """The key's failures in its current window."""
        window = self._current(key)
        return 0 if window is None else window.count

    def exhausted(self, key: str) -> bool:
        """Whether the key has used up its budget."""
        return self.count(key) >= self.limit

    def retry_after(self, key: str) -> int:
        """Whole seconds until the key's window ends (at least 1)."""
        window = self._current(key)
        if window is None:
            return 1
        return max(1, math.ceil(window.start + self._window - self._clock()))

    def add(self, key: str) -> None:
        """Count one failure of key."""
        window = self._current(key)
        if window is None:
            if len(self._keys) >= self._max_keys:
                self._keys.popitem(last=False)
            window = self._keys[key] = _Window(self._clock())
        else:
            self._keys.move_to_end(key)
        window.count += 1

    def refund(self, key: str) -> None:
        """Take back one failure counted in advance (the attempt succeeded, or was never checked)."""
        window = self._current(key)
        if window is not None and window.count > 0:
            window.count -= 1

    def _current(self, key: str) -> _Window | None:
        window = self._keys.get(key)
        if window is not None and self._clock() - window.start >= self._window:
            del self._keys[key]
            return None
        return window
