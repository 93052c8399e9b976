"""The server's garbage-collector schedule: no full collection at the interpreter's choosing while it runs,
one every interval instead, the thresholds restored when it stops."""

from __future__ import annotations

import asyncio
import gc
import weakref

from ascrm.service.collector import collect_periodically
from ascrm.service.sharing import NO_FULL_COLLECTION
from tests.support.waiting import wait_until


def test_full_collections_run_on_the_timer_and_the_thresholds_come_back() -> None:
    before = gc.get_threshold()

    async def main() -> None:
        stop = asyncio.Event()
        full = gc.get_stats()[2]["collections"]
        task = asyncio.create_task(collect_periodically(stop, interval=0.05))
        await asyncio.sleep(0)  # the task has started
        assert gc.get_threshold() == (before[0], before[1], NO_FULL_COLLECTION)
        deadline = asyncio.get_running_loop().time() + 5
        while gc.get_stats()[2]["collections"] < full + 2:  # two timed full collections
            assert asyncio.get_running_loop().time() < deadline, "no full collection on the timer"
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(main())
    assert gc.get_threshold() == before


def test_a_cycle_that_outlived_the_young_generations_is_freed_by_the_timed_collection() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    freed: list[bool] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(collect_periodically(stop, interval=0.05))
        await asyncio.sleep(0)
        a, b = Node(), Node()
        a.other, b.other = b, a
        watcher = weakref.ref(a, lambda _: freed.append(True))
        gc.collect(1)  # through both young generations: only a full collection can free the cycle now
        del a, b
        await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: bool(freed), "the cycle freed")
        assert watcher() is None
        stop.set()
        await task

    asyncio.run(main())
