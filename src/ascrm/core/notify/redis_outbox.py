"""The outbox of replicas: notifications in Redis, on a stream read by one consumer group, so any replica
delivers them and one that dies has its leases claimed by another after claim_after.

Keys (`<prefix>` is the call store's key_prefix, e.g. "ascrm:"):

- `<prefix>notify:key:<key>`: the idempotency marker, a string set once (SET NX) and kept give_up_after
  plus a day (EX), so a key put again, by any replica and even after its delivery, is not stored twice.
- `<prefix>notify:n:<key>`: the notification while it is pending or failed, a hash: t target, n kind,
  c call id, r created_at, b body, a attempts, d due, e last error, s where it stands ('p' in the stream,
  'l' in the later set, 'f' failed), h the stream entry carrying it (while 'p').
- `<prefix>notify:stream`: the stream of due notifications, one entry (field k: the key) each, read by
  the group `delivery`, one consumer per replica; an entry is deleted (XACK, XDEL) once settled, so the
  stream holds only what is due or leased. A handle is an entry's id.
- `<prefix>notify:later`: a sorted set of the keys waiting for a retry, scored by when they are due;
  lease() moves the due ones back into the stream (in its script: two replicas never move one twice).
- `<prefix>notify:pending`: every pending key (stream and later set), scored by the order they were put
  in: the listing's order, and its size is what max_pending bounds.
- `<prefix>notify:failed`: the failed keys, scored by the order they failed in; at most max_pending are
  kept, the oldest dropped beyond that (their keys stay known).
- `<prefix>notify:targets`: a hash of the pending count by target, kept by the scripts.
- `<prefix>notify:seq`: the counter that orders the two sets above; `<prefix>notify:claim`: where the
  next XAUTOCLAIM starts in the group's pending entries.

Each operation is one Lua script (redis_outbox_scripts.py), called by its SHA1 and loaded again when Redis
answers NOSCRIPT (a restart, a failover, SCRIPT FLUSH). Due times are the delivery loop's clock (the now
passed in; replicas' clocks should agree to well under a second); whether a lease is held too long is
Redis's clock (XAUTOCLAIM's idle time). A lease held claim_after without being settled is claimed by
the next lease() of any replica, this one included (so one whose settle was lost to a Redis hiccup gets
it again even when it is the only replica): claim_after must be well above the longest a delivery holds
a lease (attempt_timeout). A lease settled by the replica that claimed it and by the one it was claimed
from counts once: the first to settle wins, but a delivery always removes the notification. The scripts
reach the per-notification keys by name, so this is not for Redis Cluster (nor is the call store). Every
call runs within `timeout` seconds and
raises OutboxError when Redis fails, refuses or is late (waiting for a free slot included: at most
`connections` calls are in flight, so a client whose pool has that many connections never runs out;
the call store's request pool is not one to share, its own bound counts on having it all). Needs Redis
6.2 or newer, bytes replies (decode_responses off).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ascrm.core.calls.redis_scripts import Script
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
from ascrm.core.notify.redis_outbox_scripts import (
    DELIVERED,
    FAIL,
    LEASE,
    LISTING,
    PUT,
    RETRY,
    RETRY_AT,
    SCRIPTS,
    START,
)

log = structlog.get_logger("ascrm.notify")

GROUP: Final = "delivery"
MAX_BODY: Final = 64 * 1024  # bytes of a body put() stores at most
MAX_BATCH: Final = 1000  # notifications put at once, and leased or listed at once, at most
MAX_KEY: Final = 512  # characters of a key, a target's name or a kind at most
MAX_ERROR: Final = 200  # characters of a last error kept
_MARKER_EXTRA: Final = 86400  # seconds a key stays known past give_up_after
_GONE_AFTER: Final = 86400.0  # seconds a consumer that holds nothing is kept idle before start() drops it


class RedisOutbox:
    """Notifications in Redis shared by every replica on it (see the module's docstring for the keys)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        consumer: str,
        settings: NotifySettings,
        *,
        timeout: float = 5.0,
        connections: int = 4,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisOutbox needs a client with decode_responses off (bodies are bytes)")
        if not consumer or len(consumer) > MAX_KEY:
            raise ValueError(f"consumer must be 1 to {MAX_KEY} characters, not {consumer!r:.80}")
        self._client = client
        self._consumer = consumer
        self._settings = settings
        self._timeout = timeout
        self._slots = asyncio.Semaphore(connections)  # calls in flight at most: the client's pool may be small
        base = f"{prefix}notify:"
        names = ("stream", "pending", "later", "failed", "targets", "seq", "claim")
        self._keys = tuple(f"{base}{name}" for name in names)
        self._prefixes = (f"{base}n:", f"{base}key:")
        self._marker_ttl = int(settings.give_up_after) + _MARKER_EXTRA
        self._claim_ms = max(1, int(settings.claim_after * 1000))
        self._shas: dict[str, str] = {}  # script name -> the SHA1 Redis knows it by (redis-py's, after a load)

    async def start(self) -> None:
        """Load the scripts; create the consumer group (and the stream) unless they exist; drop consumers
        long gone that hold nothing."""
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                client: Any = self._client
                async with client.pipeline(transaction=False) as pipe:
                    for script in SCRIPTS:
                        pipe.script_load(script.text)
                    for script, sha in zip(SCRIPTS, await pipe.execute(), strict=True):
                        self._shas[script.name] = _text(sha)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _error("start", exc) from exc
        gone = await self._run(START, GROUP, self._consumer, int(_GONE_AFTER * 1000), create=False)
        if gone:
            log.info("notify_consumers_dropped", count=int(gone))

    async def put(self, notifications: Sequence[Notification]) -> int:
        """Store them, due at their created_at; a key known before is left alone. The number newly stored;
        OutboxFullError when they would make more than max_pending pending (none stored)."""
        if not notifications:
            return 0
        if len(notifications) > MAX_BATCH:
            raise OutboxError(f"put takes at most {MAX_BATCH} notifications at once, not {len(notifications)}")
        args: list[Any] = [self._settings.max_pending, self._marker_ttl]
        for notification in notifications:
            _check(notification)
            _finite("created_at", notification.created_at)
            args += [notification.key, notification.target, notification.kind, notification.call_id]
            args += [repr(float(notification.created_at)), notification.body]
        stored = int(await self._run(PUT, *args))
        if stored < 0:
            raise OutboxFullError(f"{self._settings.max_pending} notifications are pending (max_pending)")
        return stored

    async def lease(self, limit: int, now: float) -> list[Leased]:
        """At most limit (up to MAX_BATCH) due notifications for this replica alone: claimed from replicas
        that held theirs claim_after without settling, retries now due, then new ones."""
        limit = min(limit, MAX_BATCH)
        if limit <= 0:
            return []
        _finite("now", now)
        flat = await self._run(LEASE, GROUP, self._consumer, limit, repr(float(now)), self._claim_ms)
        leased = []
        for i in range(0, len(flat), 8):
            handle, key, target, kind, call_id, created_at, body, attempts = flat[i : i + 8]
            notification = Notification(
                _text(key), _text(target), _text(kind), int(call_id), float(created_at), bytes(body)
            )
            leased.append(Leased(notification, int(attempts), _text(handle)))
        return leased

    async def delivered(self, leased: Leased) -> None:
        """A lease delivered: the notification is gone (its key stays known until the marker expires)."""
        await self._run(DELIVERED, GROUP, leased.handle, leased.notification.key)

    async def retry_at(self, leased: Leased, due: float, error: str) -> None:
        """A lease tried again at due, its attempts one more; nothing when the lease was claimed and
        settled by another replica first."""
        _finite("due", due)
        args = (GROUP, leased.handle, leased.notification.key, repr(float(due)), error[:MAX_ERROR])
        await self._run(RETRY_AT, *args)

    async def fail(self, leased: Leased, error: str) -> None:
        """A lease moved to the failed list, its attempts one more (the oldest failed beyond max_pending
        are dropped); nothing when the lease was claimed and settled by another replica first."""
        args = (GROUP, leased.handle, leased.notification.key, error[:MAX_ERROR], self._settings.max_pending)
        await self._run(FAIL, *args)

    async def listing(self, state: States, limit: int, offset: int) -> list[Listed]:
        """Notifications in state, oldest first (pending: in the order put; failed: in the order failed),
        at most MAX_BATCH from offset."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r:.40}")
        limit = min(limit, MAX_BATCH)
        if limit <= 0:
            return []
        flat = await self._run(LISTING, state, max(0, int(offset)), limit)
        listed = []
        for i in range(0, len(flat), 9):
            key, target, kind, call_id, created_at, body, attempts, due, error = flat[i : i + 9]
            notification = Notification(
                _text(key), _text(target), _text(kind), int(call_id), float(created_at), bytes(body)
            )
            due_at = float(due) if state == "pending" and due else None
            listed.append(Listed(notification, state, int(attempts), due_at, _text(error) or None))
        return listed

    async def retry(self, key: str, now: float) -> bool:
        """A failed notification pending again, due now, with no attempts and created_at now (the deadline
        counts from it); False when key names no failed one; OutboxFullError when max_pending are pending."""
        _finite("now", now)
        args = (key, repr(float(now)), self._settings.max_pending, self._marker_ttl)
        answer = int(await self._run(RETRY, *args))
        if answer < 0:
            raise OutboxFullError(f"{self._settings.max_pending} notifications are pending (max_pending)")
        return answer == 1

    async def pending_counts(self) -> Mapping[str, int]:
        """Pending notifications by target name (a hash the scripts keep: one read)."""
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                counts = await self._client.hgetall(self._keys[4])
        except (RedisError, OSError, TimeoutError) as exc:
            raise _error("pending_counts", exc) from exc
        return {_text(target): int(count) for target, count in counts.items() if int(count) > 0}

    async def close(self) -> None:
        """Nothing to let go of: the client is the call store's, which closes it."""

    async def _run(self, script: Script, *args: Any, create: bool = True) -> Any:
        """Call script within the timeout, loading it when Redis does not know it; the group is created
        again (once) when Redis lost it (a restart without persistence)."""
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                try:
                    return await self._call(script, args)
                except ResponseError as exc:
                    if not create or not str(exc).startswith("NOGROUP"):
                        raise
                    await self._call(START, (GROUP, self._consumer, int(_GONE_AFTER * 1000)))
                    return await self._call(script, args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _error(script.name, exc) from exc

    async def _call(self, script: Script, args: Sequence[Any]) -> Any:
        client: Any = self._client
        keys = self._keys
        argv = (*self._prefixes, *args)
        try:
            return await client.evalsha(self._shas.get(script.name, script.sha), len(keys), *keys, *argv)
        except NoScriptError:
            self._shas[script.name] = _text(await client.script_load(script.text))
            log.info("notify_script_loaded", script=script.name)  # Redis forgot it, or start() was not called
            return await client.evalsha(self._shas[script.name], len(keys), *keys, *argv)


def _check(notification: Notification) -> None:
    """OutboxError for a notification too big to store, naming its key and the size."""
    key = notification.key
    if not key or len(key) > MAX_KEY:
        raise OutboxError(f"a notification key must be 1 to {MAX_KEY} characters, not {len(key)}: {key[:80]!r}")
    for name, value in (("target", notification.target), ("kind", notification.kind)):
        if len(value) > MAX_KEY:
            raise OutboxError(f"notification {key[:80]!r}: its {name} is {len(value)} characters, over {MAX_KEY}")
    if len(notification.body) > MAX_BODY:
        raise OutboxError(f"notification {key[:80]!r}: its body is {len(notification.body)} bytes, over {MAX_BODY}")


def _finite(name: str, value: float) -> None:
    """ValueError for a time that is not a finite number of seconds."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite Unix time, not {value!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error(operation: str, exc: BaseException) -> OutboxError:
    """The outbox's error for a failed Redis call: the operation and the error's class (a reply from
    Redis: its first line, clipped), never an argument."""
    if isinstance(exc, ResponseError):
        reason = str(exc).splitlines()[0][:120] if str(exc) else ""
        return OutboxError(f"redis outbox {operation}: {type(exc).__name__}: {reason}")
    return OutboxError(f"redis outbox {operation}: {type(exc).__name__}")
