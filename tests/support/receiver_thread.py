"""The stand-in receiver (receiver.py) run in a thread of its own, for tests that talk to served
processes synchronously: told what to do from the test's thread, read back as copies."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.support.receiver import Receiver, Seen


class ThreadedReceiver:
    """A running Receiver in a background event loop; `close()` at the end."""

    def __init__(self, **settings: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.receiver = Receiver(**settings)
        self._run(self.receiver.start)

    @property
    def url(self) -> str:
        """The hook's URL."""
        return self.receiver.url

    def set(self, **changes: Any) -> None:
        """Change how later requests are answered (mode, status, retry_after, delay); leaving `hang`
        lets the hanging ones go (answered 503)."""

        def apply() -> None:
            for name, value in changes.items():
                setattr(self.receiver, name, value)
            if self.receiver.mode != "hang":
                self.receiver.release()

        self._loop.call_soon_threadsafe(apply)

    def delivered(self) -> Counter[str]:
        """The keys answered 2xx, with how often each was."""
        return self._read(lambda: Counter(self.receiver.delivered))

    def seen(self) -> list[Seen]:
        """Every request received so far."""
        return self._read(lambda: list(self.receiver.seen))

    def go_away(self) -> None:
        """Close the port (hanging requests let go)."""
        self._run(self.receiver.stop)

    def come_back(self) -> None:
        """Listen on the same port again."""
        self._run(self.receiver.start)

    def close(self) -> None:
        """Stop the receiver and its thread."""
        self._run(self.receiver.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, coroutine: Callable[[], Any]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(10)

    def _read(self, read: Callable[[], Any]) -> Any:
        async def reading() -> Any:
            return read()

        return asyncio.run_coroutine_threadsafe(reading(), self._loop).result(10)
