"""The Redis call store: call state shared by several ascrm replicas, one round trip per answer.

Each call is one hash (stored.py) that Redis itself changes: every change of a call is one Lua script
call (redis_scripts.py) that appends to the hash and returns it, and Python folds it into the
CallState the rules read. Nothing is read, changed in Python and written back, so there is no
optimistic transaction, no retry and no lock: replicas changing one call at once each get a state
that includes every change before theirs, and a pushed command is taken by exactly one poll. A poll
that fires a poll rule claims it in a second script call (HSETNX), so the rule answers once.

The requests' commands go through one lane (redis_batches.py): whatever this process's requests
queue while a write is on its way is written next, in one write, on one connection, and the replies
come back in order. An answer waits for its own script call only: the decision's record is queued
behind it and written without the answer waiting (a record lost to an outage is logged and counted
as `store_unavailable` with `lost: decision record`).

`{prefix}calls` indexes the call ids by their last event or poll (the admin listing, the cap);
`{prefix}ended` holds ended calls by the moment their hash expires. Housekeeping is off the request
path: the sweeper's timer calls sweep(), and of all replicas only the one holding the lease
`{prefix}sweeper` sweeps (drops index members whose hash expired, evicts the oldest beyond
`max_calls`), so their number does not multiply the work. The cap is therefore enforced within a
sweep interval, not at each new call.

Every method runs within `timeout_ms` in all (a poll's claim included) and raises
StoreUnavailableError when Redis is down, refusing, slow or hung; the pool reconnects by itself once
Redis answers again, and scripts Redis has forgotten (restart, failover, SCRIPT FLUSH) are loaded
again before the calls it refused are sent again. A hash this version cannot read is logged as
`call_record_unreadable`, counted in `unreadable`, left as it is, and raises UnreadableRecordError
from the operation that read it; the listing leaves it out. Needs Redis 6.2 or newer (or Valkey);
RESP2 is used.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from datetime import datetime
from typing import Any

import hiredis
import orjson
import structlog
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError, ResponseError

from ascrm.core.calls import codec, stored
from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_batches import Batches
from ascrm.core.calls.redis_cache import FoldCache, Held
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.calls.redis_scripts import (
    CANCEL,
    POLL,
    POOL_PICK,
    POOL_REST,
    POOL_STATES,
    PUSH,
    RECORD,
    STICKY,
    SWEEP,
    UPDATE,
    Script,
)
from ascrm.core.calls.state import CallState, Command, DecisionRecord, clip
from ascrm.core.calls.sticky import StickySettings
from ascrm.core.calls.store import (
    CallEndedError,
    StoreError,
    StoreUnavailableError,
    UnknownCallError,
    UnreadableRecordError,
)
from ascrm.core.engine import Decider, RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType

log = structlog.get_logger("ascrm.calls")

Observer = Callable[[str, float], None]  # (operation, seconds): how long one store operation took
_CHUNK = 500  # calls read per pipeline by the listing
_SWEEP_MOST = 10_000  # index members dropped, and calls evicted, by one sweep at most
_REFUSALS = (UnknownCallError, CallEndedError, UnreadableRecordError, StoreUnavailableError)  # all replies read
_REASON_CHARS = 200  # of an unreadable record's reason, in its log line


class RedisCallStore:
    """Keeps CallState per CallID in Redis, shared by every ascrm process that uses the same keys."""

    def __init__(self, settings: StateSettings, observe: Observer | None = None) -> None:
        self._prefix = settings.key_prefix
        self._ttl = settings.ttl_seconds
        self._grace = settings.ended_grace_seconds
        self._max_calls = settings.max_calls
        self._max_call_bytes = settings.max_call_bytes
        self._record_limit = codec.record_limit(settings.max_call_bytes)
        self._budget = settings.timeout_ms / 1000
        self._lease_ms = max(2 * settings.sweep_interval_ms, 2000)
        self._calls_key = f"{self._prefix}calls"
        self._ended_key = f"{self._prefix}ended"
        self._lease_key = f"{self._prefix}sweeper"
        self._token = secrets.token_hex(8)  # this replica, as the sweeper's lease names it
        self._incarnations = itertools.count(1)  # with _token: a fresh hash's `i`
        self.folds = FoldCache(settings.cache_mb * 2**20)  # the calls it folded last (redis_cache.py)
        self._observe = observe
        self._margin = min(0.05, self._budget / 4)  # of the budget, for a script's reply to travel back
        self._clock_offset_ms = 0.0  # Redis's clock minus ours, as measured by ping()
        # the options that fit the budget, TLS, Sentinel, the bound: redis_connection.py
        self._pool: ConnectionPool = connection_pool(
            settings, max_connections=settings.max_connections, timeout=self._budget
        )
        # ping() (the background readiness check) has a connection of its own: health checks never
        # take, nor wait for, a connection of the pool the platform's requests use
        self._probe_pool: ConnectionPool = connection_pool(settings, max_connections=1, timeout=self._budget)
        self._slots = asyncio.Semaphore(settings.max_connections)  # the requests' pool: a free connection
        self._loaded_at: dict[str, float] = {}  # when each script was last found forgotten (logged)
        self._snapshotting: set[int] = set()  # calls whose snapshot this process is writing
        scripts = (UPDATE, POLL, RECORD, PUSH, CANCEL, SWEEP, STICKY, POOL_PICK, POOL_REST, POOL_STATES)
        self._batches = Batches(self._held, self._refused, scripts, self._forgotten, budget=self._budget)
        self.evicted = 0  # calls dropped because of the cap, by this process's sweeps
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
        entry, own = stored.event_entry(event, now)
        args = (
            entry,
            now.isoformat(),
            now.timestamp(),
            self._ttl,
            self._grace,
            "1" if event.event_type == EventType.EndCall else "0",
            clip(event.an) or "",
            clip(event.un) or "",
            "1" if stored.connects(event) else "0",
            call_id,
            stored.MAX_ENTRIES,
            *self._since(held := self.folds.get(call_id)),
        )
        key, deadline = self._key(call_id), self._deadline()
        keys = (key, self._calls_key, self._ended_key, f"{self._prefix}call:{call_id}")
        flat = await self._run("update", UPDATE, keys, args, key=key, deadline=deadline)
        return self._folded(call_id, flat, own=own, held=held, remember=True).call

    async def answer_poll(
        self, call_id: int, now: datetime, rules: RuleSet, decide: Decider
    ) -> tuple[CallState | None, Decision]:
        """A GET poll: the oldest pushed command (taken by the poll's script), else the rules (a poll rule
        that fires is claimed in Redis first, so it answers once however many replicas are polled)."""
        key, deadline = self._key(call_id), self._deadline()
        moment = now.isoformat()
        held = self.folds.get(call_id)
        args = (
            moment,
            now.timestamp(),
            self._ttl,
            orjson.dumps(rules.revision),
            call_id,
            orjson.dumps(moment),
            *self._since(held),
        )
        reply = await self._run("poll", POLL, (key, self._calls_key), args, key=key, deadline=deadline)
        if not reply:
            self.folds.drop(call_id)
            return None, NO_ACTION
        flat, taken = reply
        folded = self._folded(call_id, flat, int(taken), held=held, remember=True)
        call = folded.call
        if folded.taken is not None:
            return call, folded.taken
        while True:  # each lost claim adds its rule to fired_polls: at most once per poll rule
            decision = decide(rules, None, call, now)
            if decision.action is None:
                return call, decision
            rule, command = decision.rule_id, decision.command_id
            record = DecisionRecord(now, "poll", decision.action, decision.param, rule, command, rules.revision)
            # a rule that answers although it has answered before repeats (`repeat: true`): no claim
            claim = "" if rule is None or rule in call.fired_polls else rule
            entry = stored.decision_entry(record)
            claimed = await self._run("claim", RECORD, (key,), (entry, claim, "", 0), key=key, deadline=deadline)
            if claimed != -1:  # recorded (or the call has just expired: answered all the same)
                call.decided(record)
                return call, decision
            call.fired_polls = call.fired_polls | {claim}  # another poll answered with it first

    def record(self, call_id: int, record: DecisionRecord) -> asyncio.Future[Any]:
        """Remember an answer that carried an action: queued at once, behind every command this process
        queued before it, and written without the answer waiting for it (the future settles when it is
        stored, or with StoreUnavailableError / UnreadableRecordError, within about the budget)."""
        key, deadline = self._key(call_id), self._deadline()
        entry = stored.decision_entry(record)
        future = self._script("record", RECORD, (key,), (entry, "", "", 0), key=key, deadline=deadline)
        if self._observe is not None:
            observe, loop, started = self._observe, asyncio.get_running_loop(), deadline - self._budget
            future.add_done_callback(lambda _: observe("record", loop.time() - started))
        return future

    async def get(self, call_id: int) -> CallState | None:
        """The state of a call, or None when it is unknown or expired."""
        flat = await self._hgetall("get", self._key(call_id))
        return self._folded(call_id, flat).call if flat else None

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
        async with self._using("calls") as (conn, _):
            if an is None and un is None and state is None:
                if not limit:  # ZREVRANGE offset offset-1 would be everything from offset on
                    return [], int(await _command(conn, "ZCARD", self._calls_key))
                total, members = await _pipeline(
                    conn, [("ZCARD", self._calls_key), ("ZREVRANGE", self._calls_key, offset, offset + limit - 1)]
                )
                page, gone = await self._read(conn, members)
                return page, int(total) - gone
            members = await _command(conn, "ZREVRANGE", self._calls_key, 0, -1)
            matches: list[bytes] = []
            for start in range(0, len(members), _CHUNK):
                chunk = members[start : start + _CHUNK]
                read = [("HMGET", self._key(int(member)), *stored.FACTS) for member in chunk]
                for member, flat in zip(chunk, await _pipeline(conn, read, errors=True), strict=True):
                    if isinstance(flat, ResponseError):
                        self._unreadable(int(member), self._wrong_type(self._key(int(member))))
                        continue
                    call_an, call_un, status = stored.facts(flat)
                    if (an is None or call_an == an) and (un is None or call_un == un) and state in (None, status):
                        matches.append(member)
            page, gone = await self._read(conn, matches[offset : offset + limit])
        return page, len(matches) - gone

    async def sweep(self, now: datetime) -> None:
        """Forget expired calls and evict the oldest beyond the cap, if this replica holds the lease."""
        ts = now.timestamp()
        prefix, suffix = f"{self._prefix}call:{{", "}"
        args = (prefix, suffix, ts, ts - self._ttl, self._max_calls, self._token, self._lease_ms, _SWEEP_MOST)
        keys, deadline = (self._calls_key, self._ended_key, self._lease_key), self._deadline()
        evicted = await self._run("sweep", SWEEP, keys, args, key="", deadline=deadline, timed=False)
        for member in evicted or ():
            self.evicted += 1
            log.warning("call_evicted", call_id=int(member), reason="max_calls", max_calls=self._max_calls)

    async def counts(self) -> tuple[int, int]:
        """How many calls the calls index holds, and how many of those have ended (as of the last sweep)."""
        async with self._using("counts") as (conn, _):
            held, ended = await _pipeline(conn, [("ZCARD", self._calls_key), ("ZCARD", self._ended_key)])
        return int(held), int(ended)

    async def push(self, call_id: int, action: Action, param: str, now: datetime) -> tuple[Command, int]:
        """Queue a command for a live call; it and its position in the queue."""
        key, deadline = self._key(call_id), self._deadline()
        value = stored.command_value(action, param, now)
        reply = await self._run("push", PUSH, (key,), (value,), key=key, deadline=deadline)
        identity = int(reply[0])
        if identity == -1:
            raise UnknownCallError(f"no call {call_id}")
        if identity == -2:
            flat = await self._hgetall("push", key)
            self._folded(call_id, flat)  # raises UnreadableRecordError (logged and counted)
            raise UnknownCallError(f"no call {call_id}")  # gone meanwhile
        if identity == 0:
            raise CallEndedError(f"call {call_id} has ended")
        return Command(identity, action, param, now), int(reply[1])

    async def cancel(self, call_id: int, command_id: int) -> bool:
        """Drop a pending command; whether it was still pending."""
        key, deadline = self._key(call_id), self._deadline()
        reply = await self._run("cancel", CANCEL, (key,), (command_id,), key=key, deadline=deadline)
        dropped = int(reply)
        if dropped == -1:
            raise UnknownCallError(f"no call {call_id}")
        return dropped == 1

    async def ping(self) -> bool:
        """Whether Redis answers within the budget (never raises); on the probe's own connection. It asks
        for Redis's TIME, and so also measures how far Redis's clock is from this process's."""
        try:
            async with self._using("ping", probe=True) as (conn, _):
                sent = time.time()
                seconds, micros = await _command(conn, "TIME")
                self._clock_offset_ms = int(seconds) * 1000 + int(micros) / 1000 - (sent + time.time()) * 500
        except StoreUnavailableError:
            return False
        return True

    def sticky(self, settings: StickySettings) -> RedisSticky:
        """The last operators, kept in this Redis for every replica (calls/sticky.py)."""
        return RedisSticky(self, settings)

    async def close(self) -> None:
        """Write what is queued (decision records, snapshots) within the budget, then close every connection."""
        await self._batches.close(self._budget)
        await self._pool.aclose()
        await self._probe_pool.aclose()

    # ------------------------------------------------------------------------------------------------
    # Time budget, errors, connections, scripts

    def _deadline(self) -> float:
        """The budget from now, on the loop's clock."""
        return asyncio.get_running_loop().time() + self._budget

    def _script(
        self,
        what: str,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        key: str,
        deadline: float,
        timed: bool = True,
    ) -> asyncio.Future[Any]:
        """Queue script on the lane (redis_batches.py); the future of its reply. timed: deadline goes in
        as the script's last argument, on Redis's clock, a margin early so that a reply sent in time
        arrives in time; a script that finds itself late changes nothing and answers nil, which fails
        the future."""
        if timed:
            remaining = deadline - asyncio.get_running_loop().time() - self._margin
            args = (*args, int((time.time() + remaining) * 1000 + self._clock_offset_ms))
        return self._batches.script(script, keys, args, what=what, key=key, deadline=deadline, timed=timed)

    async def _run(
        self,
        what: str,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        key: str,
        deadline: float,
        timed: bool = True,
    ) -> Any:
        """Queue script (see _script) and wait for its reply."""
        return await self._wait(what, self._script(what, script, keys, args, key=key, deadline=deadline, timed=timed))

    async def _wait(self, operation: str, future: asyncio.Future[Any]) -> Any:
        """The reply of a queued command (the lane fails it at its deadline); the time it took is
        observed under operation."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await future
        finally:
            if self._observe is not None:
                self._observe(operation, loop.time() - started)

    async def _hgetall(self, operation: str, key: str) -> list[bytes]:
        """A call's hash as HGETALL's flat list (empty: no such call)."""
        deadline = self._deadline()
        flat: list[bytes] = await self._wait(
            operation, self._batches.command(("HGETALL", key), what=operation, key=key, deadline=deadline)
        )
        return flat

    @asynccontextmanager
    async def _using(self, operation: str, *, probe: bool = False) -> AsyncIterator[tuple[AbstractConnection, float]]:
        """A connection of its own for a few commands (the listing, the counts, the readiness check) and
        the deadline, the budget from now, within which the body runs; the time it took is observed
        under operation. probe: the readiness check's own connection."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._budget
        try:
            async with self._connection(deadline, probe=probe, operation=operation) as conn:
                yield conn, deadline
        finally:
            if self._observe is not None:
                self._observe(operation, loop.time() - started)

    @asynccontextmanager
    async def _connection(
        self, deadline: float, *, probe: bool = False, operation: str = "batch", held: bool = False
    ) -> AsyncIterator[AbstractConnection]:
        """A pooled connection, used within deadline (the loop's time); Redis trouble of any kind becomes
        StoreUnavailableError naming operation. The lane and _using take their connections here.
        held: deadline bounds taking the connection only (the lane bounds each of its writes itself).

        The requests' pool is waited for (a semaphore of max_connections) within the deadline. The
        redis-py hazard: a command cut short (the deadline cancels it, the store closes) leaves its
        reply unread on the socket, and the next user of the connection would read it as the answer to
        its own command. redis-py 8 itself disconnects on any BaseException while sending or reading,
        CancelledError included, and its pool reconnects a connection that has unread data when handing
        it out (checked with RESP2). We do not rely on that alone: whatever interrupts our use of a
        connection, we close it before it goes back to the pool, so it is only reused after a reconnect.
        """
        pool, slots = (self._probe_pool, nullcontext()) if probe else (self._pool, self._slots)
        try:
            async with asyncio.timeout_at(deadline) as scope, slots:
                conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
                if held:
                    scope.reschedule(None)
                try:
                    yield conn
                except _REFUSALS:  # raised once every reply was read: the connection is fine
                    raise
                except BaseException:
                    await conn.disconnect(nowait=True)
                    raise
                finally:
                    await asyncio.shield(pool.release(conn))
        except TimeoutError as exc:
            raise StoreUnavailableError(f"redis: {operation} took more than {self._budget * 1000:.0f} ms") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {operation}: {type(exc).__name__}: {exc}") from exc

    def _held(self, deadline: float) -> AbstractAsyncContextManager[AbstractConnection]:
        """The lane's connection: taken within deadline, then kept for as long as the lane needs it."""
        return self._connection(deadline, held=True)

    def _refused(self, key: str, exc: ResponseError) -> StoreError:
        """An error reply to a command about the call at key, as the store's error: a key holding
        something else than a call's hash (WRONGTYPE) is an unreadable record (logged and counted)."""
        if str(exc).startswith("WRONGTYPE"):
            error = self._wrong_type(key)
            self._unreadable(_call_id_of(key), error)
            return error
        return StoreUnavailableError(f"redis: {type(exc).__name__}: {exc}")

    def _forgotten(self, script: Script) -> None:
        """Redis did not know a script (it is loaded again before its next call): one log line per burst."""
        if time.monotonic() - self._loaded_at.get(script.name, -60.0) > 10:
            self._loaded_at[script.name] = time.monotonic()
            log.info("store_script_loaded", script=script.name)

    # ------------------------------------------------------------------------------------------------
    # The stored form

    def _since(self, held: Held | None) -> tuple[int, bytes, str]:
        """A script's arguments about the fold held of its call: the entry it is folded up to (0: none),
        the hash's incarnation, and a fresh one for a hash that has none."""
        fresh = f"{self._token}.{next(self._incarnations)}"
        return (0, b"", fresh) if held is None else (held.last, held.incarnation, fresh)

    def _folded(
        self,
        call_id: int,
        flat: list[bytes],
        taken: int = 0,
        own: stored.Own | None = None,
        *,
        held: Held | None = None,
        remember: bool = False,
    ) -> stored.Folded:
        """The call of a hash, or of a script's reply of what came since held (UnreadableRecordError,
        logged and counted); a snapshot written when due. remember: hold a copy of it (redis_cache.py)."""
        key = self._key(call_id)
        limits = {"max_call_bytes": self._max_call_bytes, "limit": self._record_limit}
        since = held is not None and flat[:1] == [b"+"]
        quiet = since and held is not None and remember and not taken and own is None
        nothing = stored.quiet(flat, held.last) if quiet and held is not None else None
        if nothing is not None and held is not None:  # nothing came since the fold held
            folded = self._unchanged(held, nothing)
        else:
            start = held.state.copy() if since and held is not None else None
            try:
                folded = stored.fold(call_id, flat, key, **limits, taken=taken, own=own, start=start)
            except UnreadableRecordError as exc:
                self.folds.drop(call_id)
                self._unreadable(call_id, exc)
                raise
            if remember:
                if since:
                    self.folds.hits += 1
                else:
                    self.folds.misses += 1
                self.folds.put(call_id, folded.incarnation, folded.last, folded.call)
        if folded.last - folded.snapshot >= stored.SNAPSHOT_EVERY and call_id not in self._snapshotting:
            self._snapshot(call_id, stored.snapshot(folded.call), folded.last)
        return folded

    def _unchanged(self, held: Held, nothing: stored.Quiet) -> stored.Folded:
        """The fold held, brought up to date in place with the small fields of a reply that brought
        nothing else (no entry, no command: a poll of a call that is only talking); a copy is returned.
        The state held is never handed out, so changing it changes no one's call."""
        state = held.state
        if nothing.updated_at is not None:
            state.updated_at = nothing.updated_at
        state.commands = ()
        state.next_command_id = nothing.next_command_id
        self.folds.hits += 1
        return stored.Folded(state.copy(), held.last, nothing.snapshot, None, held.incarnation)

    def _snapshot(self, call_id: int, raw: bytes, upto: int) -> None:
        """Queue a snapshot of a call as of entry upto (off the answer's path; a failure only delays it)."""
        key = self._key(call_id)
        self._snapshotting.add(call_id)
        future = self._script("snapshot", RECORD, (key,), ("", "", raw, upto), key=key, deadline=self._deadline())

        def written(future: asyncio.Future[Any]) -> None:
            self._snapshotting.discard(call_id)
            if not future.cancelled() and future.exception() is not None:
                log.debug("store_snapshot_failed", call_id=call_id, error=str(future.exception()))

        future.add_done_callback(written)

    async def _read(self, conn: AbstractConnection, members: Sequence[bytes]) -> tuple[list[CallState], int]:
        """The calls of index members, in order, leaving out the unreadable (logged and counted) and the
        gone (dropped from the index); and how many were gone."""
        if not members:
            return [], 0
        hashes = await _pipeline(conn, [("HGETALL", self._key(int(member))) for member in members], errors=True)
        pairs = list(zip(members, hashes, strict=True))
        gone = [member for member, flat in pairs if not isinstance(flat, ResponseError) and not flat]
        if gone:
            await _pipeline(conn, [("ZREM", self._calls_key, *gone), ("ZREM", self._ended_key, *gone)])
        calls: list[CallState] = []
        for member, flat in pairs:
            call_id = int(member)
            if isinstance(flat, ResponseError):
                self._unreadable(call_id, self._wrong_type(self._key(call_id)))
            elif flat:
                with suppress(UnreadableRecordError):
                    calls.append(self._folded(call_id, flat).call)
        return calls, len(gone)

    def _key(self, call_id: int) -> str:
        return f"{self._prefix}call:{{{call_id}}}"

    @staticmethod
    def _wrong_type(key: str) -> UnreadableRecordError:
        return UnreadableRecordError(key, "not a call's hash (WRONGTYPE): another layout's or another program's key")

    def _unreadable(self, call_id: int, exc: UnreadableRecordError) -> None:
        self.unreadable += 1
        log.warning("call_record_unreadable", call_id=call_id, key=exc.key, reason=exc.reason[:_REASON_CHARS])


class RedisSticky:
    """The last operators in Redis: `<prefix>sticky:<map>:<caller>` for `days`, the oldest beyond
    max_entries dropped by the write that makes them too many (an index per map)."""

    def __init__(self, store: RedisCallStore, settings: StickySettings) -> None:
        self._store = store
        self._ttl = settings.days * 86400
        self._max = settings.max_entries

    async def get(self, kind: str, caller: str) -> str | None:
        """The caller's last operator of this map, or None (StoreUnavailableError)."""
        key = f"{self._store._prefix}sticky:{kind}:{caller}"
        deadline = self._store._deadline()
        future = self._store._batches.command(("GET", key), what="sticky", key=key, deadline=deadline)
        value = await self._store._wait("sticky", future)
        return None if value is None else bytes(value).decode(errors="replace")

    def put(self, kind: str, caller: str, destination: str) -> None:
        """Remember it, without waiting (a write lost to an outage is logged)."""
        if self._ttl <= 0:
            return
        store = self._store
        entries = f"{store._prefix}sticky:{kind}:"
        keys = (entries + caller, f"{store._prefix}sticky:{kind}")
        args = (destination, self._ttl, int(time.time()), caller, self._max, entries)
        future = store._script("sticky", STICKY, keys, args, key=keys[0], deadline=store._deadline())
        future.add_done_callback(_sticky_written)


def _sticky_written(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("store_unavailable", lost="last operator", error=str(future.exception()))


async def _command(conn: AbstractConnection, *args: Any) -> Any:
    """Send one command on conn and read its reply (packed by hiredis: redis-py's own packing, in
    Python, costs more than the rest of a script call)."""
    await conn.send_packed_command(hiredis.pack_command(args))
    return await conn.read_response()


async def _pipeline(
    conn: AbstractConnection, commands: Sequence[tuple[Any, ...]], *, errors: bool = False
) -> list[Any]:
    """Send commands on conn in one write and read their replies. An error reply raises (the caller's
    _using() then closes the connection, replies unread and all); with errors, it takes its
    reply's place once every reply has been read."""
    await conn.send_packed_command(b"".join(map(hiredis.pack_command, commands)))
    if not errors:
        return [await conn.read_response() for _ in commands]
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _call_id_of(key: str) -> int:
    """The CallID in a call's key (its hash tag), 0 for another key."""
    _, _, tagged = key.rpartition("{")
    return int(tagged[:-1]) if tagged[:-1].isdigit() else 0
