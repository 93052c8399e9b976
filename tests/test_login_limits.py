"""The bookkeeping behind login limits, in-process: budgets, the failure log and the KDF pool stay bounded."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from ascrm.service.auth.failures import FailureTally
from ascrm.service.auth.kdf import KdfBusyError, KdfPool
from ascrm.service.auth.login import LoginGuard, LoginLimits, LoginRefusedError
from ascrm.service.auth.throttle import FailureBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_counts_failures_per_key_within_its_window() -> None:
    clock = Clock()
    budget = FailureBudget(limit=3, window=60, max_keys=100, clock=clock)
    for _ in range(3):
        assert not budget.exhausted("10.0.0.1")
        budget.add("10.0.0.1")
    assert budget.exhausted("10.0.0.1")
    assert not budget.exhausted("10.0.0.2")
    clock.now += 30
    assert budget.retry_after("10.0.0.1") == 30
    budget.refund("10.0.0.1")
    assert budget.count("10.0.0.1") == 2
    clock.now += 30  # the window is over: a clean record again
    assert budget.count("10.0.0.1") == 0
    assert len(budget) == 0


def test_a_budget_keeps_at_most_max_keys_forgetting_the_quietest() -> None:
    budget = FailureBudget(limit=3, window=60, max_keys=100, clock=Clock())
    budget.add("busy")
    for i in range(10_000):
        budget.add(f"198.51.{i // 256}.{i % 256}")
        if i % 50 == 0:
            budget.add("busy")
    assert len(budget) == 100
    assert budget.count("busy") > 0  # it kept failing: still remembered


def test_the_failure_log_aggregates_per_client_and_user_and_is_bounded() -> None:
    tally = FailureTally(max_keys=3)
    for _ in range(5):
        tally.add("platform", "203.0.113.9", "autosecretary")
    tally.add("platform", "203.0.113.9", "autosecretary", throttled=True)
    for i in range(1000):
        tally.add("admin", f"198.51.100.{i % 250}", f"user-{i}")
    with capture_logs() as logs:
        assert tally.flush(60) == 4
        assert tally.flush(60) == 0  # nothing new
    first = logs[0]
    assert first["event"] == "auth_failed"
    assert (first["client"], first["user"], first["failures"], first["throttled"]) == (
        "203.0.113.9",
        "autosecretary",
        5,
        1,
    )
    assert logs[-1] == {"event": "auth_failed_untracked", "attempts": 998, "interval_s": 60, "log_level": "warning"}


def test_an_over_budget_client_is_refused_before_any_check() -> None:
    guard = LoginGuard(LoginLimits(per_client=2))
    for _ in range(2):
        guard.begin("platform", "192.0.2.1", b"autosecretary").failed()
    with pytest.raises(LoginRefusedError) as caught:
        guard.admit_client("platform", "192.0.2.1", lambda: b"autosecretary")
    assert (caught.value.status, caught.value.retry_after) == (429, 60)
    guard.admit_client("platform", "192.0.2.2", lambda: b"autosecretary")  # another client: untouched


def test_over_the_user_budget_only_clients_that_failed_are_refused() -> None:
    guard = LoginGuard(LoginLimits(per_client=5, per_user=3))
    for i in range(3):
        guard.begin("platform", f"192.0.2.{i}", b"autosecretary").failed()
    with pytest.raises(LoginRefusedError):
        guard.begin("platform", "192.0.2.1", b"autosecretary")  # failed before: refused unchecked
    guard.begin("platform", "192.0.2.200", b"autosecretary").succeeded()  # a clean record: still checked


def test_the_kdf_pool_runs_at_most_its_workers_and_the_best_ranked_first() -> None:
    async def main() -> tuple[int, list[int], int]:
        pool = KdfPool(workers=1, queue=3)
        gate, running, peak, order = threading.Event(), [0], [0], []
        lock = threading.Lock()

        def check(rank: int) -> int:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            gate.wait(5)
            with lock:
                running[0] -= 1
                order.append(rank)
            return rank

        first = [asyncio.create_task(pool.run(9, lambda: check(9)))]  # takes the worker
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(pool.run(rank, lambda rank=rank: check(rank))) for rank in (5, 3, 4)]
        await asyncio.sleep(0.05)
        with pytest.raises(KdfBusyError):
            await pool.run(6, lambda: check(6))  # worse than every waiting attempt: refused at once
        better = asyncio.create_task(pool.run(0, lambda: check(0)))  # pushes out the worst (5)
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*first, *waiting, better, return_exceptions=True)
        refused = sum(isinstance(result, KdfBusyError) for result in results)
        pool.close()
        return peak[0], order[1:], refused

    peak, order, refused = asyncio.run(main())
    assert peak == 1
    assert order == [0, 3, 4]
    assert refused == 1
