"""The Redis call store: call state shared by several ascrm replicas.

One JSON record per call at `{prefix}call:{id}` (codec.py), written with an expiry: the TTL
while the call is live, the grace period once it has ended, so an abandoned call disappears by itself.
Every change of a call is an optimistic transaction (WATCH, GET, apply in Python, MULTI SET … EXEC,
again on a conflict), so two replicas handling events of one call at once lose neither, and a pushed
command is taken by exactly one poll. Within one process, changes of one call also queue on a lock, so
conflicts only happen between processes.

`{prefix}calls` is a sorted set of the call ids scored by their last update (event or poll) for the
admin listing and the cap; `{prefix}ended` holds ended calls scored by the moment their record
expires, so the listing and the cap forget them on time. A sweep (a Lua script, at most once a second
per process, and whenever the cap is exceeded) drops expired members and evicts the oldest calls
beyond `max_calls`.

Every method runs within `timeout_ms` and raises StoreUnavailableError when Redis is down, refusing,
slow or hung; the pool reconnects by itself once Redis answers again. A record this version cannot
read (codec.decode refuses it) is logged as `call_record_unreadable`, counted in `unreadable`, left as
it is (a newer release may read it), and raises UnreadableRecordError from the operation that read
it; the listing leaves it out. Needs Redis 6.0 or newer
(SET … KEEPTTL); RESP2 is used, so any Redis-compatible server works.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import structlog
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from ascrm.core.calls import codec
from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.calls.state import CallState, Command, DecisionRecord
from ascrm.core.calls.store import (
    CallEndedError,
    StoreUnavailableError,
    UnknownCallError,
    UnreadableRecordError,
    settle_poll,
)
from ascrm.core.engine import Decider, RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision

log = structlog.get_logger("ascrm.calls")

T = TypeVar("T")
_MAX_ATTEMPTS = 32  # optimistic transactions of one call before giving up (the time budget bounds them too)
_SWEEP_EVERY = 1.0  # seconds between two sweeps by one process
_CHUNK = 500  # records fetched per MGET by the listing
_REFUSALS = (UnknownCallError, CallEndedError, UnreadableRecordError)  # raised with every reply read
_REASON_CHARS = 200  # of an unreadable record's reason, in its log line

# KEYS: the calls set, the ended set. ARGV: the record key prefix, now, the idle cutoff (now - TTL),
# max_calls. Drops ended calls past their grace period and calls idle past the TTL (their records
# have expired already), then evicts the oldest beyond the cap; returns the ids of evicted calls.
_SWEEP = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 1000)
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local evicted = {}
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #popped, 2 do
    local id = popped[i]
    redis.call('ZREM', KEYS[2], id)
    if redis.call('DEL', ARGV[1] .. id) == 1 then
      evicted[#evicted + 1] = id
    end
  end
end
return evicted
"""


class _CallLocks:
    """An asyncio lock per call id, dropped once no task holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, call_id: int) -> AsyncIterator[None]:
        entry = self._locks.get(call_id)
        if entry is None:
            entry = self._locks[call_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[call_id]


class RedisCallStore:
    """Keeps CallState per CallID in Redis, shared by every ascrm process that uses the same keys."""

    def __init__(self, settings: StateSettings) -> None:
        self._prefix = settings.key_prefix
        self._ttl = settings.ttl_seconds
        self._grace = settings.ended_grace_seconds
        self._max_calls = settings.max_calls
        self._max_call_bytes = settings.max_call_bytes
        self._record_limit = codec.record_limit(settings.max_call_bytes)
        self._budget = settings.timeout_ms / 1000
        self._calls_key = f"{self._prefix}calls"
        self._ended_key = f"{self._prefix}ended"
        self._record_prefix = f"{self._prefix}call:"
        # the options that fit the budget, TLS, Sentinel, the bound: redis_connection.py
        self._pool: ConnectionPool = connection_pool(
            settings, max_connections=settings.max_connections, timeout=self._budget
        )
        # ping() (the background readiness check) has a connection of its own: health checks never
        # take, nor wait for, a connection of the pool the platform's requests use
        self._probe_pool: ConnectionPool = connection_pool(settings, max_connections=1, timeout=self._budget)
        self._locks = _CallLocks()
        self._next_sweep = 0.0
        self.evicted = 0  # calls dropped because of the cap, by this process
        self.unreadable = 0  # records this process found and could not read

    # ------------------------------------------------------------------------------------------------
    # The CallStore methods

    async def update(self, event: CallEvent, now: datetime) -> CallState:
        """Apply event to its call (starting a state if the call is new) and return the state."""
        call_id = event.call_id or 0
        if not call_id:  # not stored, like the memory store: the state of this event alone
            call = CallState.begin(call_id, event, now)
            call.apply(event, now, self._max_call_bytes)
            return call

        def change(call: CallState | None) -> tuple[CallState, CallState]:
            if call is None:
                call = CallState.begin(call_id, event, now)
            call.apply(event, now, self._max_call_bytes)
            return call, call

        async with self._guard("update"):
            call, size = await self._transact(call_id, change, now)
            if size > self._max_calls or time.monotonic() >= self._next_sweep:
                await self._sweep(now.timestamp())
        return call

    async def answer_poll(
        self, call_id: int, now: datetime, rules: RuleSet, decide: Decider
    ) -> tuple[CallState | None, Decision]:
        """A GET poll: the oldest pushed command, else the rules; decided and recorded in one transaction,
        so two replicas polled at once neither deliver a command twice nor fire a poll rule twice."""

        def change(call: CallState | None) -> tuple[tuple[CallState | None, Decision], CallState | None]:
            if call is None:
                return (None, NO_ACTION), None
            call.polled(now)
            return (call, settle_poll(call, now, rules, decide)), call

        async with self._guard("poll"):
            result, _ = await self._transact(call_id, change, now)
        return result

    async def record(self, call_id: int, record: DecisionRecord) -> None:
        """Remember an answer that carried an action."""

        def change(call: CallState | None) -> tuple[None, CallState | None]:
            if call is not None:
                call.decided(record)
            return None, call

        async with self._guard("record"):
            await self._transact(call_id, change)

    async def get(self, call_id: int) -> CallState | None:
        """The state of a call, or None when it is unknown or expired."""
        async with self._guard("get"), self._connection() as conn:
            raw = await _command(conn, "GET", self._key(call_id))
        return None if raw is None else self._load(call_id, raw)

    async def calls(
        self,
        *,
        an: str | None = None,
        un: str | None = None,
        state: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[CallState], int]:
        """Calls matching the filters, most recently updated first, and how many match in all."""
        offset, limit = max(offset, 0), max(limit, 0)
        async with self._guard("calls"):
            await self._sweep(time.time())
            if an is None and un is None and state is None:
                return await self._page(offset, limit)
            return await self._filtered(an, un, state, offset, limit)

    async def sweep(self, now: datetime) -> None:
        """Forget expired calls and evict the oldest beyond the cap (the timer's sweep)."""
        async with self._guard("sweep"):
            await self._sweep(now.timestamp())

    async def counts(self) -> tuple[int, int]:
        """How many calls the calls set holds, and how many of those have ended (as of the last sweep)."""
        async with self._guard("counts"), self._connection() as conn:
            held, ended = await _pipeline(conn, [("ZCARD", self._calls_key), ("ZCARD", self._ended_key)])
        return int(held), int(ended)

    async def push(self, call_id: int, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command for a live call; it and its position in the queue."""

        def change(call: CallState | None) -> tuple[tuple[Command, int], CallState]:
            if call is None:
                raise UnknownCallError(f"no call {call_id}")
            if call.ended:
                raise CallEndedError(f"call {call_id} has ended")
            return call.push(action, param, now), call

        async with self._guard("push"):
            result, _ = await self._transact(call_id, change)
        return result

    async def cancel(self, call_id: int, command_id: int) -> bool:
        """Drop a pending command; whether it was still pending."""

        def change(call: CallState | None) -> tuple[bool, CallState | None]:
            if call is None:
                raise UnknownCallError(f"no call {call_id}")
            if not call.cancel_command(command_id):
                return False, None  # nothing to write
            return True, call

        async with self._guard("cancel"):
            dropped, _ = await self._transact(call_id, change)
        return dropped

    async def ping(self) -> bool:
        """Whether Redis answers within the budget (never raises); on the probe's own connection."""
        try:
            async with self._guard("ping"), self._connection(self._probe_pool) as conn:
                await _command(conn, "PING")
        except StoreUnavailableError:
            return False
        return True

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
        await self._probe_pool.aclose()

    # ------------------------------------------------------------------------------------------------
    # Time budget, errors, connections

    @asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        """Run the body within the budget; Redis trouble of any kind becomes StoreUnavailableError."""
        try:
            async with asyncio.timeout(self._budget):
                yield
        except TimeoutError as exc:  # the budget (asyncio's), or redis-py's socket timeout
            raise StoreUnavailableError(f"redis: {operation} took more than {self._budget * 1000:.0f} ms") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {operation}: {type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def _connection(self, pool: ConnectionPool | None = None) -> AsyncIterator[AbstractConnection]:
        """A connection of pool (default: the requests' pool) for a few commands, handed back clean.

        The redis-py hazard: a command cut short (our budget cancels the task, a client goes away)
        leaves its reply unread on the socket, and the next user of the connection would read it as
        the answer to its own command. redis-py 8 itself disconnects on any BaseException while
        sending or reading, CancelledError included (read_response / send_packed_command), and its
        pool reconnects a connection that has unread data when handing it out (checked with RESP2;
        see __init__). We do not rely on that alone: whatever interrupts our use of a connection,
        we close it before it goes back to the pool, so it can only be reused after a reconnect.
        Commands go straight to the connection (no Pipeline object: its reset() would send UNWATCH,
        reconnecting first, after the budget is spent).
        """
        pool = self._pool if pool is None else pool
        conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            yield conn
        except _REFUSALS:  # raised once every reply was read (see _transact): the connection is fine
            raise
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await asyncio.shield(pool.release(conn))

    # ------------------------------------------------------------------------------------------------
    # Transactions

    async def _transact(
        self,
        call_id: int,
        change: Callable[[CallState | None], tuple[T, CallState | None]],
        touched: datetime | None = None,
    ) -> tuple[T, int]:
        """Run change on the call's stored state (None: unknown) and store what it returns, atomically.

        change returns its result and the state to write (None: nothing to write); it may refuse with
        UnknownCallError or CallEndedError. touched: the time of an event or a poll, which renews the
        TTL and the call's place in the listing. Returns change's result and the size of the calls
        set after writing a new call (else 0).
        """
        key = self._key(call_id)
        async with self._locks.hold(call_id):  # this process's changes of one call never conflict
            for attempt in range(_MAX_ATTEMPTS):
                async with self._connection() as conn:
                    _, raw = await _pipeline(conn, [("WATCH", key), ("GET", key)])
                    try:
                        before = None if raw is None else self._load(call_id, raw)
                        was_ended = before is not None and before.ended  # change may change `before`
                        result, after = change(before)
                    except _REFUSALS:
                        await _command(conn, "UNWATCH")
                        raise
                    if after is None:
                        await _command(conn, "UNWATCH")
                        return result, 0
                    size = await self._write(conn, key, after, touched, new=before is None, was_ended=was_ended)
                if size >= 0:
                    return result, size
                # another process changed the call between WATCH and EXEC: again, after a short jitter
                await asyncio.sleep(random.uniform(0, 0.0005 * (attempt + 1)))  # noqa: S311
        raise StoreUnavailableError(f"redis: call {call_id} was changed by others {_MAX_ATTEMPTS} times in a row")

    async def _write(
        self,
        conn: AbstractConnection,
        key: str,
        call: CallState,
        touched: datetime | None,
        *,
        new: bool,
        was_ended: bool,
    ) -> int:
        """MULTI, the writes of one changed call, EXEC on the watching connection. Returns -1 when EXEC
        found the call changed since WATCH (nothing was written); else the calls set's size when the
        call is new (the cap may be exceeded), 0 otherwise. new, was_ended: what the call was before."""
        member = str(call.call_id)
        payload = codec.encode(call)
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        if call.ended and not was_ended:  # just ended: readable for the grace period, then gone
            if self._grace:
                commands.append(("SET", key, payload, "EX", self._grace))
                drop_at = (touched or call.updated_at).timestamp() + self._grace
                commands.append(("ZADD", self._ended_key, drop_at, member))
            else:
                commands += [("DEL", key), ("ZREM", self._calls_key, member)]
        elif touched is not None and not call.ended:
            commands.append(("SET", key, payload, "EX", self._ttl))
        else:  # a decision, a command, a late event of an ended call: the expiry stays as it was
            commands.append(("SET", key, payload, "KEEPTTL"))
        if new and not call.ended:
            commands.append(("ZREM", self._ended_key, member))  # its id may be an expired ended call's
        if touched is not None and (self._grace or not call.ended):
            commands.append(("ZADD", self._calls_key, touched.timestamp(), member))
        if new:
            commands.append(("ZCARD", self._calls_key))
        commands.append(("EXEC",))
        done = (await _pipeline(conn, commands))[-1]
        if done is None:
            return -1
        return int(done[-1]) if new else 0

    # ------------------------------------------------------------------------------------------------
    # Sweep, cap and listing

    async def _sweep(self, now: float) -> None:
        """Forget expired calls and evict the oldest beyond the cap (one atomic script)."""
        self._next_sweep = time.monotonic() + _SWEEP_EVERY
        keys_and_args = (self._calls_key, self._ended_key, self._record_prefix, now, now - self._ttl, self._max_calls)
        async with self._connection() as conn:
            evicted = await _command(conn, "EVAL", _SWEEP, 2, *keys_and_args)
        for member in evicted:
            self.evicted += 1
            log.warning("call_evicted", call_id=int(member), reason="max_calls", max_calls=self._max_calls)

    async def _page(self, offset: int, limit: int) -> tuple[list[CallState], int]:
        """No filters: only the page's records are read (members whose record is gone are dropped)."""
        async with self._connection() as conn:
            for _ in range(_MAX_ATTEMPTS):
                if not limit:
                    return [], int(await _command(conn, "ZCARD", self._calls_key))
                total, members = await _pipeline(
                    conn, [("ZCARD", self._calls_key), ("ZREVRANGE", self._calls_key, offset, offset + limit - 1)]
                )
                records = await self._records(conn, members)
                found = [(int(member), raw) for member, raw in zip(members, records, strict=True) if raw is not None]
                if len(found) == len(members):
                    page = [self._listed(call_id, raw) for call_id, raw in found]
                    return [call for call in page if call is not None], int(total)
                await self._forget(conn, [member for member, raw in zip(members, records, strict=True) if raw is None])
        raise StoreUnavailableError("redis: the calls set keeps changing")

    async def _filtered(
        self, an: str | None, un: str | None, state: str | None, offset: int, limit: int
    ) -> tuple[list[CallState], int]:
        """Filters: every call's record is read and matched (its facts only; states built for the page)."""
        async with self._connection() as conn:
            members = await _command(conn, "ZREVRANGE", self._calls_key, 0, -1)
            matches: list[tuple[int, bytes]] = []
            gone: list[bytes] = []
            for start in range(0, len(members), _CHUNK):
                chunk = members[start : start + _CHUNK]
                for member, raw in zip(chunk, await self._records(conn, chunk), strict=True):
                    if raw is None:
                        gone.append(member)
                        continue
                    call_id = int(member)
                    try:
                        call_an, call_un, call_state = codec.facts(
                            raw, key=self._key(call_id), limit=self._record_limit
                        )
                    except UnreadableRecordError as exc:
                        self._unreadable(call_id, exc)
                        continue
                    if (
                        (an is None or call_an == an)
                        and (un is None or call_un == un)
                        and (state is None or call_state == state)
                    ):
                        matches.append((call_id, raw))
            if gone:
                await self._forget(conn, gone)
        page = [self._listed(call_id, raw) for call_id, raw in matches[offset : offset + limit]]
        return [call for call in page if call is not None], len(matches)

    async def _records(self, conn: AbstractConnection, members: Sequence[bytes]) -> list[bytes | None]:
        if not members:
            return []
        prefix = self._record_prefix.encode()
        records: list[bytes | None] = await _command(conn, "MGET", *(prefix + member for member in members))
        return records

    async def _forget(self, conn: AbstractConnection, members: Sequence[bytes]) -> None:
        """Drop members whose records have expired from both sets."""
        await _pipeline(conn, [("ZREM", self._calls_key, *members), ("ZREM", self._ended_key, *members)])

    def _key(self, call_id: int) -> str:
        return f"{self._record_prefix}{call_id}"

    def _load(self, call_id: int, raw: bytes) -> CallState:
        """The state from its record; UnreadableRecordError (logged, counted) when it cannot be read."""
        key = self._key(call_id)
        try:
            call = codec.decode(raw, key=key, limit=self._record_limit)
        except UnreadableRecordError as exc:
            self._unreadable(call_id, exc)
            raise
        if call.call_id != call_id:
            mismatch = UnreadableRecordError(key, f"it holds call {call.call_id}")
            self._unreadable(call_id, mismatch)
            raise mismatch
        return call

    def _listed(self, call_id: int, raw: bytes) -> CallState | None:
        """The state from its record for a listing; None when it cannot be read (logged, counted)."""
        try:
            return self._load(call_id, raw)
        except UnreadableRecordError:
            return None

    def _unreadable(self, call_id: int, exc: UnreadableRecordError) -> None:
        self.unreadable += 1
        log.warning("call_record_unreadable", call_id=call_id, key=exc.key, reason=exc.reason[:_REASON_CHARS])


async def _command(conn: AbstractConnection, *args: Any) -> Any:
    """Send one command on conn and read its reply."""
    await conn.send_command(*args)
    return await conn.read_response()


async def _pipeline(conn: AbstractConnection, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send commands on conn in one write and read their replies (an error reply raises; the caller's
    _connection() then closes the connection, replies unread and all)."""
    await conn.send_packed_command(conn.pack_commands(commands))
    return [await conn.read_response() for _ in commands]
