"""The outbox of one process: notifications in an SQLite file (`<data_dir>/notifications.sqlite3`).

Every statement runs on one worker thread that owns the connection, never on the event loop. The file is
in WAL mode with `synchronous=NORMAL`: a put that returned survives the process being killed (its commit
is in the WAL, which the OS writes out), while a crash of the OS itself (or a power cut) may lose the
last commits before the WAL is synced. The file is locked for this process alone (`locking_mode=EXCLUSIVE`):
a second process opening it is refused, so the leases voided at open are this process's own.

A delivered notification's key is kept (table `delivered`) for give_up_after plus a day, so the same
call's outcome seen again is not stored and delivered twice. Failed notifications are kept up to
max_pending of them: past that, the oldest are dropped (and logged) by the lease's housekeeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

import structlog

from ascrm.core.notify.message import (
    STATES,
    Leased,
    Listed,
    Notification,
    NotifySettings,
    OutboxError,
    OutboxFullError,
    States,
)

SCHEMA_VERSION: Final = 1
MAX_LISTING: Final = 1000  # notifications one listing gives at most
KEEP_DELIVERED_EXTRA: Final = 86400.0  # a delivered key is kept give_up_after plus this many seconds
HOUSEKEEPING_EVERY: Final = 60.0  # seconds (of the lease's clock) between two prunings

_SCHEMA: Final = """
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    call_id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL,
    leased_until REAL,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (state, due_at);
CREATE INDEX notifications_listed ON notifications (state, created_at, id);
CREATE TABLE delivered (key TEXT PRIMARY KEY, delivered_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX delivered_at ON delivered (delivered_at);
"""
_COLUMNS: Final = "id, key, target, kind, call_id, created_at, body, state, attempts, due_at, last_error"
_INSERT: Final = (
    "INSERT OR IGNORE INTO notifications (key, target, kind, call_id, created_at, body, state, due_at) "
    "SELECT ?, ?, ?, ?, ?, ?, 'pending', ? WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE key = ?)"
)
_LEASE: Final = (
    f"UPDATE notifications SET leased_until = ? WHERE id IN (SELECT id FROM notifications "  # noqa: S608
    "WHERE state = 'pending' AND due_at <= ? AND (leased_until IS NULL OR leased_until < ?) "
    f"ORDER BY due_at, id LIMIT ?) RETURNING {_COLUMNS}"
)
_PRUNE_FAILED: Final = (
    "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications WHERE state = 'failed' "
    "ORDER BY created_at, id LIMIT max(0, (SELECT count(*) FROM notifications WHERE state = 'failed') - ?))"
)

log = structlog.get_logger("ascrm.notify")
T = TypeVar("T")
Row = tuple[int, str, str, str, int, float, bytes, str, int, float | None, str | None]


class SqliteOutbox:
    """The Outbox on an SQLite file (or in memory, not durable, when there is no data_dir)."""

    def __init__(self, label: str, settings: NotifySettings, executor: ThreadPoolExecutor) -> None:
        """Use open(); this only keeps what open() made."""
        self._label = label
        self._settings = settings
        self._executor = executor
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._pending = 0  # pending notifications: touched by the worker thread only
        self._last_now: float | None = None  # the last lease's clock: when a delivery is recorded
        self._pruned_at = float("-inf")

    @classmethod
    async def open(cls, path: Path | None, settings: NotifySettings) -> SqliteOutbox:
        """The outbox in the file at path (created with its folders), or in memory when path is None;
        OutboxError naming path when it is not an outbox this ascrm can use. Every lease is voided."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ascrm-outbox")
        outbox = cls(":memory:" if path is None else str(path), settings, executor)
        try:
            await outbox._call(outbox._open, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return outbox

    async def put(self, notifications: Sequence[Notification]) -> int:
        """Store them, due at their created_at; the number newly stored (a key known before is skipped)."""
        return await self._call(self._put, list(notifications))

    async def lease(self, limit: int, now: float) -> list[Leased]:
        """At most limit due notifications, oldest due first, leased for claim_after seconds."""
        return await self._call(self._lease, limit, now)

    async def delivered(self, leased: Leased) -> None:
        """Drop the notification and remember its key."""
        await self._call(self._delivered, leased)

    async def retry_at(self, leased: Leased, due: float, error: str) -> None:
        """Due again at due, one attempt more, error kept."""
        await self._call(self._retry_at, leased, due, error)

    async def fail(self, leased: Leased, error: str) -> None:
        """Move it to the failed list with error."""
        await self._call(self._fail, leased, error)

    async def listing(self, state: States, limit: int, offset: int) -> list[Listed]:
        """Notifications in state, oldest created first; limit is bounded by MAX_LISTING."""
        if state not in STATES:
            raise ValueError(f"state: {state!r} is none of {STATES}")
        if limit < 0 or offset < 0:
            raise ValueError(f"limit, offset: {limit}, {offset} must not be negative")
        return await self._call(self._listing, state, min(limit, MAX_LISTING), offset)

    async def retry(self, key: str, now: float) -> bool:
        """The failed notification key pending again, due now, created now (its deadline afresh), attempts 0."""
        return await self._call(self._retry, key, now)

    async def pending_counts(self) -> Mapping[str, int]:
        """Pending notifications by target name."""
        return await self._call(self._pending_counts)

    async def close(self) -> None:
        """Close the file; the outbox is of no more use."""
        if not self._closed:
            await self._call(self._close)
            self._closed = True
        self._executor.shutdown(wait=False)

    @property
    def pending(self) -> int:
        """Pending notifications, as counted in memory (what max_pending is checked against)."""
        return self._pending

    async def _call(self, work: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise OutboxError(f"{self._label}: the outbox is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, work, args)

    def _guarded(self, work: Callable[..., T], args: tuple[object, ...]) -> T:
        if work != self._open and self._db is None:
            raise OutboxError(f"{self._label}: the outbox is closed")
        try:
            return work(*args)
        except sqlite3.Error as error:
            if self._db is not None and self._db.in_transaction:
                self._db.rollback()
            raise OutboxError(f"{self._label}: {type(error).__name__}: {error}") from error

    # What follows runs on the worker thread.

    def _open(self, path: Path | None) -> None:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutboxError(f"{path}: cannot make its folder: {type(error).__name__}: {error}") from error
        db = sqlite3.connect(self._label, isolation_level=None, timeout=0.2)  # this process alone: no waiting
        try:
            self._prepare(db, path)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection, path: Path | None) -> None:
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        except sqlite3.OperationalError as error:  # busy: another process holds it
            raise OutboxError(f"{path}: in use by another process ({error})") from error
        except sqlite3.DatabaseError as error:
            raise OutboxError(f"{path}: not an SQLite database ({error}): move it away or remove it") from error
        if version == 0 and tables:
            raise OutboxError(f"{path}: an SQLite database but not a notifications outbox: move it away")
        if version not in (0, SCHEMA_VERSION):
            raise OutboxError(
                f"{path}: notifications outbox of schema version {version}, this ascrm knows {SCHEMA_VERSION}"
            )
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")  # the write lock, held from now on: this process alone
        except sqlite3.OperationalError as error:
            raise OutboxError(f"{path}: in use by another process ({error})") from error
        if version == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("UPDATE notifications SET leased_until = NULL WHERE leased_until IS NOT NULL")
        self._pending = db.execute("SELECT count(*) FROM notifications WHERE state = 'pending'").fetchone()[0]
        db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None  # _guarded checked
        return self._db

    def _put(self, notifications: list[Notification]) -> int:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        stored = 0
        for n in notifications:
            cursor = db.execute(
                _INSERT, (n.key, n.target, n.kind, n.call_id, n.created_at, n.body, n.created_at, n.key)
            )
            stored += cursor.rowcount
        if self._pending + stored > self._settings.max_pending:
            db.rollback()
            raise OutboxFullError(
                f"{self._label}: {self._pending} notifications pending, max_pending {self._settings.max_pending}:"
                f" {stored} new not stored"
            )
        db.execute("COMMIT")
        self._pending += stored
        return stored

    def _lease(self, limit: int, now: float) -> list[Leased]:
        db = self._conn()
        self._last_now = now
        if now - self._pruned_at >= HOUSEKEEPING_EVERY:
            self._housekeeping(db, now)
        if limit <= 0:
            return []
        db.execute("BEGIN IMMEDIATE")
        rows: list[Row] = db.execute(_LEASE, (now + self._settings.claim_after, now, now, limit)).fetchall()
        db.execute("COMMIT")
        rows.sort(key=lambda row: (row[9] or 0.0, row[0]))
        return [Leased(_notification(row), row[8], str(row[0])) for row in rows]

    def _housekeeping(self, db: sqlite3.Connection, now: float) -> None:
        """Forget delivered keys past their keeping; drop the oldest failed past max_pending of them."""
        keep = self._settings.give_up_after + KEEP_DELIVERED_EXTRA
        db.execute("DELETE FROM delivered WHERE delivered_at < ?", (now - keep,))
        dropped = db.execute(_PRUNE_FAILED, (self._settings.max_pending,)).rowcount
        if dropped > 0:
            log.warning("notifications_failed_dropped", dropped=dropped, kept=self._settings.max_pending)
        self._pruned_at = now

    def _delivered(self, leased: Leased) -> None:
        db = self._conn()
        now = self._last_now if self._last_now is not None else time.time()
        db.execute("BEGIN IMMEDIATE")
        gone = db.execute("DELETE FROM notifications WHERE id = ? AND state = 'pending'", (int(leased.handle),))
        db.execute("INSERT OR REPLACE INTO delivered (key, delivered_at) VALUES (?, ?)", (leased.notification.key, now))
        db.execute("COMMIT")
        self._pending -= gone.rowcount

    def _retry_at(self, leased: Leased, due: float, error: str) -> None:
        self._conn().execute(
            "UPDATE notifications SET attempts = attempts + 1, due_at = ?, leased_until = NULL, last_error = ? "
            "WHERE id = ? AND state = 'pending'",
            (due, error, int(leased.handle)),
        )

    def _fail(self, leased: Leased, error: str) -> None:
        cursor = self._conn().execute(
            "UPDATE notifications SET state = 'failed', attempts = attempts + 1, due_at = NULL, "
            "leased_until = NULL, last_error = ? WHERE id = ? AND state = 'pending'",
            (error, int(leased.handle)),
        )
        self._pending -= cursor.rowcount

    def _listing(self, state: States, limit: int, offset: int) -> list[Listed]:
        rows: list[Row] = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM notifications WHERE state = ? "  # noqa: S608
                "ORDER BY created_at, id LIMIT ? OFFSET ?",
                (state, limit, offset),
            )
            .fetchall()
        )
        return [Listed(_notification(row), state, row[8], row[9], row[10]) for row in rows]

    def _retry(self, key: str, now: float) -> bool:
        if self._pending + 1 > self._settings.max_pending:
            raise OutboxFullError(f"{self._label}: max_pending {self._settings.max_pending}: {key!r} not retried")
        cursor = self._conn().execute(
            "UPDATE notifications SET state = 'pending', attempts = 0, due_at = ?, created_at = ?, "
            "leased_until = NULL WHERE key = ? AND state = 'failed'",
            (now, now, key),
        )
        self._pending += cursor.rowcount
        return cursor.rowcount == 1

    def _pending_counts(self) -> dict[str, int]:
        rows = self._conn().execute(
            "SELECT target, count(*) FROM notifications WHERE state = 'pending' GROUP BY target"
        )
        return {str(target): int(count) for target, count in rows}

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _notification(row: Row) -> Notification:
    return Notification(key=row[1], target=row[2], kind=row[3], call_id=row[4], created_at=row[5], body=row[6])
