"""The SQLite outbox: its whole protocol, its bounds, its file refused when foreign, and puts surviving kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ascrm.core.notify.message import Notification, NotifySettings, OutboxError, OutboxFullError
from ascrm.core.notify.sqlite_outbox import MAX_LISTING, SCHEMA_VERSION, SqliteOutbox

pytestmark = pytest.mark.anyio
NOW = 1_000_000.0
SETTINGS = NotifySettings(max_pending=10, claim_after=60.0, give_up_after=3600.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "notifications.sqlite3"


@pytest.fixture
async def outbox(path: Path) -> AsyncIterator[SqliteOutbox]:
    opened = await SqliteOutbox.open(path, SETTINGS)
    yield opened
    await opened.close()


def note(key: str, target: str = "crm", created_at: float = NOW) -> Notification:
    return Notification(key, target, "missed", 7, created_at, b'{"key": "' + key.encode() + b'"}')


async def test_a_put_is_leased_with_all_it_holds(outbox: SqliteOutbox, path: Path) -> None:
    assert path.exists()  # the folder was made
    assert await outbox.put([note("a")]) == 1
    [leased] = await outbox.lease(10, NOW)
    assert leased.notification == note("a")
    assert leased.attempts == 0


async def test_a_key_is_stored_once_even_after_its_delivery(outbox: SqliteOutbox) -> None:
    assert await outbox.put([note("a"), note("a"), note("b")]) == 2
    assert await outbox.put([note("a")]) == 0
    leased = await outbox.lease(10, NOW)
    assert sorted(one.notification.key for one in leased) == ["a", "b"]
    await outbox.delivered(next(one for one in leased if one.notification.key == "a"))
    assert await outbox.put([note("a")]) == 0  # delivered: known, not stored again
    assert outbox.pending == 1
    assert await outbox.pending_counts() == {"crm": 1}


async def test_a_delivered_key_is_forgotten_after_give_up_after_and_a_day(outbox: SqliteOutbox) -> None:
    await outbox.put([note("a")])
    [leased] = await outbox.lease(10, NOW)
    await outbox.delivered(leased)
    await outbox.lease(10, NOW + 3600 + 86400 - 1)
    assert await outbox.put([note("a")]) == 0
    await outbox.lease(10, NOW + 3600 + 86400 + 61)  # the housekeeping runs once a minute
    assert await outbox.put([note("a")]) == 1


async def test_past_max_pending_a_put_stores_none(outbox: SqliteOutbox) -> None:
    assert await outbox.put([note(f"k{i}") for i in range(9)]) == 9
    with pytest.raises(OutboxFullError, match="max_pending 10"):
        await outbox.put([note("x"), note("y")])
    assert outbox.pending == 9
    assert await outbox.put([note("k1"), note("x")]) == 1  # a repeat is no new one: it fits
    with pytest.raises(OutboxFullError):
        await outbox.put([note("z")])
    [first, *_] = await outbox.lease(1, NOW)
    await outbox.fail(first, "HTTP 404")  # a failed one waits no more
    assert await outbox.put([note("z")]) == 1
    assert [one.notification.key for one in await outbox.listing("pending", 100, 0)][-1] == "z"


async def test_the_pending_count_is_loaded_at_open(path: Path) -> None:
    first = await SqliteOutbox.open(path, SETTINGS)
    await first.put([note(f"k{i}") for i in range(10)])
    await first.close()
    again = await SqliteOutbox.open(path, SETTINGS)
    try:
        assert again.pending == 10
        with pytest.raises(OutboxFullError):
            await again.put([note("more")])
    finally:
        await again.close()


async def test_a_lease_is_exclusive_until_it_expires(outbox: SqliteOutbox) -> None:
    await outbox.put([note(f"k{i}", created_at=NOW + i) for i in range(5)])
    first = await outbox.lease(3, NOW + 10)
    second = await outbox.lease(10, NOW + 10)
    assert [one.notification.key for one in first] == ["k0", "k1", "k2"]  # oldest due first
    assert [one.notification.key for one in second] == ["k3", "k4"]
    assert await outbox.lease(10, NOW + 10 + 59) == []
    expired = await outbox.lease(10, NOW + 10 + 61)  # never settled: its delivery died
    assert sorted(one.notification.key for one in expired) == [f"k{i}" for i in range(5)]


async def test_only_due_notifications_are_leased(outbox: SqliteOutbox) -> None:
    await outbox.put([note("a"), note("later", created_at=NOW + 100)])
    assert [one.notification.key for one in await outbox.lease(10, NOW)] == ["a"]
    assert await outbox.lease(0, NOW + 200) == []


async def test_a_retry_is_due_at_its_time_with_one_attempt_more(outbox: SqliteOutbox) -> None:
    await outbox.put([note("a")])
    [leased] = await outbox.lease(10, NOW)
    await outbox.retry_at(leased, NOW + 30, "HTTP 500")
    [listed] = await outbox.listing("pending", 10, 0)
    assert (listed.state, listed.attempts, listed.due_at, listed.last_error) == ("pending", 1, NOW + 30, "HTTP 500")
    assert await outbox.lease(10, NOW + 29) == []  # the retry voids the lease, but it is not due yet
    [again] = await outbox.lease(10, NOW + 30)
    assert again.attempts == 1


async def test_a_failed_notification_is_listed_and_retried_afresh(outbox: SqliteOutbox) -> None:
    await outbox.put([note("a"), note("b")])
    leased = await outbox.lease(10, NOW)
    await outbox.retry_at(leased[0], NOW + 1, "HTTP 500")
    [again] = await outbox.lease(10, NOW + 1)
    await outbox.fail(again, "gave up after 1h: HTTP 500")
    [failed] = await outbox.listing("failed", 10, 0)
    assert (failed.notification.key, failed.attempts, failed.due_at) == ("a", 2, None)
    assert failed.last_error == "gave up after 1h: HTTP 500"
    assert await outbox.pending_counts() == {"crm": 1}
    assert await outbox.lease(10, NOW + 5000) != []  # b's lease expired; a is failed, never leased
    assert await outbox.retry("b", NOW) is False  # b is pending, not failed
    assert await outbox.retry("nothing", NOW) is False
    assert await outbox.retry("a", NOW + 9000) is True
    assert await outbox.retry("a", NOW + 9000) is False
    [pending_a] = [one for one in await outbox.listing("pending", 10, 0) if one.notification.key == "a"]
    assert (pending_a.attempts, pending_a.due_at, pending_a.notification.created_at) == (0, NOW + 9000, NOW + 9000)
    assert await outbox.listing("failed", 10, 0) == []
    assert outbox.pending == 2


async def test_a_retry_when_full_is_refused(outbox: SqliteOutbox) -> None:
    await outbox.put([note(f"k{i}") for i in range(10)])
    [first] = await outbox.lease(1, NOW)
    await outbox.fail(first, "HTTP 404")
    await outbox.put([note("other")])
    with pytest.raises(OutboxFullError, match="'k0' not retried"):
        await outbox.retry("k0", NOW)


async def test_a_settled_lease_settled_again_changes_nothing(outbox: SqliteOutbox) -> None:
    await outbox.put([note("a")])
    [leased] = await outbox.lease(10, NOW)
    await outbox.fail(leased, "HTTP 404")
    await outbox.fail(leased, "again")
    await outbox.retry_at(leased, NOW, "again")
    await outbox.delivered(leased)  # a failed one is not deleted by a stale lease
    assert outbox.pending == 0
    assert [one.last_error for one in await outbox.listing("failed", 10, 0)] == ["HTTP 404"]


async def test_listing_pages_oldest_first_and_is_bounded(tmp_path: Path) -> None:
    outbox = await SqliteOutbox.open(tmp_path / "n.sqlite3", NotifySettings(max_pending=5000))
    try:
        await outbox.put([note(f"k{i:04}", created_at=NOW + i) for i in range(MAX_LISTING + 50)])
        page = await outbox.listing("pending", 3, 2)
        assert [one.notification.key for one in page] == ["k0002", "k0003", "k0004"]
        assert len(await outbox.listing("pending", 10**9, 0)) == MAX_LISTING
        assert len(await outbox.listing("pending", 10**9, MAX_LISTING)) == 50
        assert await outbox.listing("pending", 10, 10**6) == []
        assert await outbox.listing("failed", 10, 0) == []
        with pytest.raises(ValueError, match="must not be negative"):
            await outbox.listing("pending", -1, 0)
        with pytest.raises(ValueError, match="must not be negative"):
            await outbox.listing("pending", 1, -1)
        with pytest.raises(ValueError, match="'gone' is none of"):
            await outbox.listing("gone", 1, 0)  # type: ignore[arg-type]
    finally:
        await outbox.close()


async def test_reopened_the_pending_stay_and_every_lease_is_void(path: Path) -> None:
    first = await SqliteOutbox.open(path, SETTINGS)
    await first.put([note("a"), note("b")])
    [leased, _] = await first.lease(10, NOW)
    await first.retry_at(leased, NOW + 5, "HTTP 503")
    await first.lease(10, NOW + 5)  # leased again, and the process goes away
    await first.close()
    with pytest.raises(OutboxError, match="closed"):
        await first.put([note("c")])
    second = await SqliteOutbox.open(path, SETTINGS)
    try:
        again = await second.lease(10, NOW + 5)  # long before claim_after: the leases were voided
        assert sorted((one.notification.key, one.attempts) for one in again) == [("a", 1), ("b", 0)]
        assert second.pending == 2
    finally:
        await second.close()


async def test_a_second_opener_of_the_file_is_refused(outbox: SqliteOutbox, path: Path) -> None:
    with pytest.raises(OutboxError, match="in use by another process") as refused:
        await SqliteOutbox.open(path, SETTINGS)
    assert str(path) in str(refused.value)
    await outbox.put([note("a")])  # the first goes on
    assert outbox.pending == 1


async def test_a_file_of_an_unknown_schema_version_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notifications (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(OutboxError, match=f"schema version {SCHEMA_VERSION + 1}, this ascrm knows") as refused:
        await SqliteOutbox.open(path, SETTINGS)
    assert str(path) in str(refused.value)


async def test_an_sqlite_file_of_something_else_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(OutboxError, match="not a notifications outbox"):
        await SqliteOutbox.open(path, SETTINGS)


async def test_a_file_that_is_no_database_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database, it is a note someone left here\n" * 100)
    with pytest.raises(OutboxError, match="not an SQLite database") as refused:
        await SqliteOutbox.open(path, SETTINGS)
    assert str(path) in str(refused.value)
    assert path.read_bytes().startswith(b"this is not a database")  # left as it was


async def test_a_folder_that_cannot_be_made_is_told(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutboxError, match="cannot make its folder"):
        await SqliteOutbox.open(tmp_path / "file" / "notifications.sqlite3", SETTINGS)


async def test_in_memory_works_and_is_not_kept(tmp_path: Path) -> None:
    outbox = await SqliteOutbox.open(None, SETTINGS)
    await outbox.put([note("a")])
    assert await outbox.pending_counts() == {"crm": 1}
    await outbox.close()
    again = await SqliteOutbox.open(None, SETTINGS)
    assert again.pending == 0
    await again.close()
    assert list(tmp_path.iterdir()) == []


async def test_the_work_runs_off_the_event_loop(outbox: SqliteOutbox) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = outbox._put

    def spy(notifications: list[Notification]) -> int:
        seen.append(threading.get_ident())
        return original(notifications)

    outbox._put = spy  # type: ignore[method-assign]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await outbox.put([note(f"k{i}") for i in range(10)])
    ticker.cancel()
    assert len(seen) == 1
    assert seen[0] != loop_thread
    assert ticks > 0  # the loop ran while the put was under way


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from ascrm.core.notify.message import Notification, NotifySettings
    from ascrm.core.notify.sqlite_outbox import SqliteOutbox

    async def main():
        outbox = await SqliteOutbox.open(Path(sys.argv[1]), NotifySettings())
        i = 0
        while True:
            batch = [Notification(f"{i}:{j}", "crm", "missed", i, 1.0, b"{}") for j in range(3)]
            await outbox.put(batch)
            print(i, flush=True)
            i += 1

    asyncio.run(main())
    """
)


def test_every_put_that_returned_survives_kill_9(path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    returned = []
    try:
        for line in child.stdout:
            returned.append(int(line))
            if len(returned) == 300:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=10)
    returned += [int(line) for line in child.stdout]  # what it printed before it died
    assert child.returncode == -signal.SIGKILL
    assert len(returned) >= 300

    async def reopen() -> set[str]:
        outbox = await SqliteOutbox.open(path, NotifySettings())
        keys: set[str] = set()
        try:
            while page := await outbox.listing("pending", MAX_LISTING, len(keys)):
                keys |= {one.notification.key for one in page}
            return keys
        finally:
            await outbox.close()

    stored = asyncio.run(reopen())
    assert {f"{i}:{j}" for i in returned for j in range(3)} <= stored


async def test_failed_notifications_are_kept_up_to_max_pending_the_oldest_dropped(outbox: SqliteOutbox) -> None:
    for round_ in range(2):
        await outbox.put([note(f"r{round_}k{i}", created_at=NOW + round_ * 100 + i) for i in range(8)])
        for leased in await outbox.lease(100, NOW + 1000):
            await outbox.fail(leased, "HTTP 404")
    assert len(await outbox.listing("failed", 100, 0)) == 16  # dropped only by the housekeeping
    with capture_logs() as logs:
        await outbox.lease(10, NOW + 1000 + 60)
    kept = [one.notification.key for one in await outbox.listing("failed", 100, 0)]
    assert kept == [f"r0k{i}" for i in range(6, 8)] + [f"r1k{i}" for i in range(8)]
    assert [(entry["event"], entry["dropped"]) for entry in logs] == [("notifications_failed_dropped", 6)]
