"""Password KDF runs off the event loop, on a few threads of their own, with a bounded, ranked queue.

A KDF run takes tens of milliseconds of CPU and 16 MiB or more of memory. Run on the default thread
pool (40 threads), a flood of wrong passwords takes every core and hundreds of MiB that the
allocator keeps afterwards. Here at most `workers` runs go at once; at most `queue` more wait, the
lowest rank first (the caller ranks by how many failures the client already has, so a client with a
clean record goes ahead of one that keeps failing); past that, the worst-ranked attempt is refused
without a run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ascrm.errors import AscrmError

T = TypeVar("T")


class KdfBusyError(AscrmError):
    """Every KDF worker is busy and the queue is full of attempts ranked as well or better."""


class KdfPool:
    """Runs KDF checks on `workers` threads of its own; at most `queue` more wait, ranked."""

    def __init__(self, workers: int, queue: int) -> None:
        self._workers = workers
        self._queue = queue
        self._free = workers
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap of (rank, order, wake-up)
        self._order = itertools.count()
        self._executor: ThreadPoolExecutor | None = None  # started on first use

    @property
    def waiting(self) -> int:
        """Attempts waiting for a worker."""
        return len(self._waiting)

    async def run(self, rank: int, check: Callable[[], T]) -> T:
        """check() on a KDF thread once a worker is free (lower ranks first); KdfBusyError if refused."""
        if self._free > 0:
            self._free -= 1
        else:
            await self._wait(rank)
        executor = self._executor or self._start()
        job: Future[T] = executor.submit(check)
        loop = asyncio.get_running_loop()
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))  # when the thread is done
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        """Refuse the waiting attempts and stop the threads (a run under way finishes by itself)."""
        for _, _, wake in self._waiting:
            if not wake.done():
                wake.set_exception(KdfBusyError("shutting down"))
        self._waiting.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _wait(self, rank: int) -> None:
        entry = (rank, next(self._order), asyncio.get_running_loop().create_future())
        if len(self._waiting) >= self._queue:
            worst = max(self._waiting)
            if entry[:2] > worst[:2]:
                raise KdfBusyError("every KDF worker is busy and the queue is full")
            self._waiting.remove(worst)
            heapq.heapify(self._waiting)
            worst[2].set_exception(KdfBusyError("pushed out of the KDF queue by a better-ranked attempt"))
        heapq.heappush(self._waiting, entry)
        wake = entry[2]
        try:
            await wake
        except asyncio.CancelledError:
            if wake.done() and not wake.cancelled() and wake.exception() is None:
                self._release()  # a worker was handed over just as the caller left: pass it on
            elif entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def _release(self) -> None:
        """A worker is free: hand it to the best-ranked waiting attempt, or keep it."""
        while self._waiting:
            _, _, wake = heapq.heappop(self._waiting)
            if not wake.done():
                wake.set_result(None)
                return
        self._free += 1

    def _start(self) -> ThreadPoolExecutor:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ascrm-kdf")
        return self._executor
