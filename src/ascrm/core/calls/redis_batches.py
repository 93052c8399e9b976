"""One lane of commands to Redis: queued by many requests at once, written together, replied to in order.

Each request of the Redis store puts its script call (or command) in one queue and waits for its own
reply. A single task, the lane, writes what is queued on one pooled connection, many commands to a
write, and a reader task reads the replies in order and settles each request's future. Under load a
write carries the commands of dozens of requests: measured on this machine (32 concurrent script
calls), 17.8 us of this process's CPU per call instead of 54 us with a connection per request, and
40.7k calls/s instead of 18.4k. One lane keeps this process's commands in the order they were queued
(a decision's record lands before the call's next event); several lanes in parallel measured at most
a noisy 16 % more requests/s, not worth giving that order up for.

The lane keeps its connection for a spell of _HOLD seconds at most, idle moments included (without
that, requests that come one at a time would each start a lane and take a connection: measured under
polls, the server was idle 14 % of the time). In a spell a write does not wait for the replies of
the one before (up to _DEPTH writes are on their way), and once _EAGER commands are queued they are
written at once by the code that queued the last of them, without waiting for the loop's next turn:
the first requests' scripts then run in Redis while this process is still reading the next requests,
instead of the whole turn's commands going out together after it, with this process idle until they
come back (measured under POST load: the server 99 % busy instead of 82 %). Replies already received
are taken from hiredis's reader at once (see _received). Those two use redis-py's internals (the
connection's stream writer, the parser's reader), behind the version bound in pyproject.toml; the
tests of the lane cover both.

At the end of a spell the connection goes back to the pool, so the pool's rules hold: a connection
to a former master is closed when it comes back, one whose use was interrupted is closed. Each
write's replies are read within the latest deadline of its commands, and one timer fails every
future whose deadline has come, so a hung Redis costs a request its budget and no more. A command
whose deadline has passed before it is written is not written. Trouble on the connection fails
every command written and not yet answered, and closes the connection. Every future of the lane ends
with its reply or a StoreError.

Scripts are called by their SHA1 (EVALSHA). The first write after the lane starts, or after trouble,
begins with SCRIPT LOAD of every script, so they are known before the first call. When Redis answers
NOSCRIPT (it restarted, failed over or flushed its scripts), nothing more is written in the spell;
the calls it refused are queued again at the front, in their order, and the next write begins with
SCRIPT LOAD again: only the commands on their way at that moment may then run out of the order they
were queued in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError

from ascrm.core.calls.redis_scripts import Script
from ascrm.core.calls.store import StoreError, StoreUnavailableError

Connect = Callable[[float], AbstractAsyncContextManager[AbstractConnection]]  # a connection, taken within a deadline
Refused = Callable[[str, ResponseError], StoreError]  # an error reply about the key, as the store's error
_MOST = 512  # commands per write at most
_DEPTH = 4  # writes on their way at once, ahead of their replies
_EAGER = 8  # commands queued in a busy spell that are written at once, not at the loop's next turn
_HOLD = 0.2  # seconds a lane keeps one connection before giving it back to the pool (and taking one again)


@dataclass(slots=True)
class _Item:
    """One queued command: its bytes, who waits for its reply, until when, and what its errors name."""

    packed: bytes
    future: asyncio.Future[Any]
    deadline: float  # the loop's time
    what: str  # the store's operation, as its errors name it
    key: str  # the call's key ("": none), named by an error reply
    script: Script | None  # the script it calls, if any
    timed: bool  # the script answers nil when it runs after its deadline


@dataclass(slots=True)
class _Write:
    """Commands written together: their bytes, SCRIPT LOADs first, and how many replies were read."""

    items: list[_Item]
    packed: bytes
    loads: int  # SCRIPT LOAD replies before the items' own
    deadline: float  # the latest of the items', the loop's time
    read: int = 0  # of the items' replies


@dataclass(slots=True, eq=False)
class _Spell:
    """A busy spell of the lane: its connection, the writes on their way, the task reading their replies."""

    conn: AbstractConnection
    writer: asyncio.StreamWriter
    until: float  # the loop's time after which nothing more is written on it
    sent: deque[_Write]  # written, replies not all read, in order
    stir: asyncio.Event = field(default_factory=asyncio.Event)  # something was queued, or replies were read
    reader: asyncio.Task[None] | None = None
    trouble: Exception | None = None  # what stopped the reader

    def check(self) -> None:
        """Raise what stopped the reader, if anything did."""
        if self.trouble is not None:
            raise self.trouble


class Batches:
    """The lane: set up with how to get a connection, then queue commands with script() and command()."""

    def __init__(
        self,
        connect: Connect,
        refused: Refused,
        scripts: Sequence[Script],
        forgotten: Callable[[Script], None],
        *,
        budget: float,
    ) -> None:
        self._connect = connect  # within a deadline; Redis trouble raises StoreUnavailableError
        self._refused = refused
        self._forgotten = forgotten  # told when Redis answers NOSCRIPT to a script
        self._budget = budget
        self._budget_ms = f"{budget * 1000:.0f} ms"
        load: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", script.text) for script in scripts]
        self._loading = b"".join(map(hiredis.pack_command, load))
        self._scripts = len(load)
        self._loaded = False  # whether Redis has been sent every script since it last forgot one
        self._forgot = False  # Redis refused a script (NOSCRIPT) in this busy spell: no more writes in it
        self._again: list[_Item] = []  # refused with NOSCRIPT: sent again, first, once the scripts are loaded
        self._spell: _Spell | None = None  # the lane's connection while it is busy
        self._closing = False  # close() was called
        self._queue: deque[_Item] = deque()  # not yet written
        self._waiting: deque[_Item] = deque()  # not yet settled, in the order queued
        self._timer: asyncio.TimerHandle | None = None  # fails the futures whose deadline has come
        self._lane: asyncio.Task[None] | None = None

    def script(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        what: str,
        key: str,
        deadline: float,
        timed: bool,
    ) -> asyncio.Future[Any]:
        """Queue a script call by its SHA1; the future of its reply. timed: its last arg is its deadline
        and a nil reply means it ran too late (StoreUnavailableError)."""
        packed = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        return self._queued(_Item(packed, self._future(), deadline, what, key, script, timed))

    def command(self, args: Sequence[Any], *, what: str, key: str, deadline: float) -> asyncio.Future[Any]:
        """Queue one command; the future of its reply."""
        packed = hiredis.pack_command(tuple(args))
        return self._queued(_Item(packed, self._future(), deadline, what, key, None, False))

    async def close(self, within: float) -> None:
        """Let the lane write what is queued for at most within seconds, then stop it."""
        lane = self._lane
        if lane is None:
            return
        self._closing = True  # an idle spell ends now
        if self._spell is not None:
            self._spell.stir.set()
        done, _ = await asyncio.wait({lane}, timeout=within)
        if not done:
            lane.cancel()
            await asyncio.wait({lane})

    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _queued(self, item: _Item) -> asyncio.Future[Any]:
        waiting = self._waiting
        while waiting and waiting[0].future.done():  # settled: not kept (nor their replies) until a deadline
            waiting.popleft()
        self._queue.append(item)
        waiting.append(item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(item.deadline, self._expire)
        if self._lane is None:
            self._start()
        elif self._spell is not None:
            if len(self._queue) >= _EAGER:
                self._flush(self._spell)
            self._spell.stir.set()
        return item.future

    def _start(self) -> None:
        self._lane = asyncio.get_running_loop().create_task(self._run())

    def _expire(self) -> None:
        """Fail every future whose deadline has come (a reply that comes later is dropped), then wait for
        the next deadline. One timer for all: cheaper than one per command, and queued commands' deadlines
        come in about the order they were queued."""
        loop = asyncio.get_running_loop()
        now, waiting = loop.time(), self._waiting
        while waiting and (waiting[0].future.done() or waiting[0].deadline <= now):
            item = waiting.popleft()
            if not item.future.done():
                late = StoreUnavailableError(f"redis: {item.what} took more than {self._budget_ms}")
                item.future.set_exception(late)
        self._timer = loop.call_at(waiting[0].deadline, self._expire) if waiting else None

    async def _run(self) -> None:
        """Hold a connection while anything is queued or in flight; then the lane ends (the next command
        starts another)."""
        try:
            while self._queue:
                await self._busy()
        finally:
            self._lane = None
            lane = asyncio.current_task()
            if self._queue and lane is not None and not lane.cancelling():
                self._start()  # queued while this lane was ending

    async def _busy(self) -> None:
        """One spell: a connection for as long as commands keep coming (at most _HOLD seconds). Writes go
        out as commands are queued (see _flush), up to _DEPTH ahead of their replies, and a reader task
        settles the replies in order. Trouble of any kind fails every command written and not yet
        answered, and the connection is closed."""
        loop = asyncio.get_running_loop()
        spell: _Spell | None = None
        sent: deque[_Write] = deque()  # written, replies not all read
        first = self._take()
        if first is None:
            return
        sent.append(first)  # taken before the connection: a failure to connect fails it, and only it
        try:
            async with self._connect(first.deadline) as conn:
                async with asyncio.timeout_at(first.deadline):  # connects if need be, as redis-py does
                    await conn.send_packed_command(first.packed)
                spell = self._spell = _Spell(conn, _writer(conn), loop.time() + _HOLD, sent)
                try:
                    await self._serve(spell)
                finally:
                    self._spell = None  # before the connection goes back: nothing more is written on it
        except StoreError as exc:
            self._lost(sent, exc)
        except (RedisError, OSError) as exc:  # raised where the connection context does not convert it
            self._lost(sent, StoreUnavailableError(f"redis: {type(exc).__name__}: {exc}"))
        except BaseException:
            self._lost(sent, _CLOSING)
            _fail(self._again, _CLOSING)
            self._again = []
            raise
        finally:
            if spell is not None and spell.reader is not None and not spell.reader.done():
                spell.reader.cancel()
        if self._forgot:  # Redis forgot its scripts: the next write loads them, then these go first
            self._forgot = False
            self._queue.extendleft(reversed(self._again))
            self._again = []

    async def _serve(self, spell: _Spell) -> None:
        """Write on the spell's connection whatever is queued, and wait, until the spell ends: at its
        end time (even while idle, the connection is kept for the next command until then), when Redis
        forgot its scripts, when the store closes, or on trouble (raised)."""
        loop, sent = asyncio.get_running_loop(), spell.sent
        while True:
            self._flush(spell)
            spell.check()
            if spell.writer.transport.get_write_buffer_size():  # Redis reads slower than we write
                async with asyncio.timeout_at(sent[-1].deadline):
                    await spell.writer.drain()
            if not sent and (self._forgot or self._closing or loop.time() >= spell.until):
                return
            spell.stir.clear()
            if sent:
                await spell.stir.wait()
                continue
            try:  # idle
                async with asyncio.timeout_at(spell.until):
                    await spell.stir.wait()
            except TimeoutError:
                return

    def _flush(self, spell: _Spell) -> None:
        """Write what is queued on the spell's connection now, without waiting (the transport sends what
        the socket takes and buffers the rest), and make sure a reader reads the replies. Called by the
        lane, and by the queue itself once _EAGER commands wait: the first ones then reach Redis while
        this process is still reading the next requests, rather than all of them after."""
        loop = asyncio.get_running_loop()
        sent = spell.sent
        while self._queue and len(sent) < _DEPTH and not self._forgot and spell.trouble is None:
            if loop.time() >= spell.until:
                break
            if spell.writer.transport.is_closing():  # Redis closed it (a restart, say): the next spell reconnects
                spell.trouble = ConnectionError("redis closed the connection")
                break
            write = self._take()
            if write is not None:
                spell.writer.write(write.packed)
                sent.append(write)
        if sent and spell.trouble is None and (spell.reader is None or spell.reader.done()):
            spell.reader = loop.create_task(self._replies(spell))

    def _lost(self, sent: deque[_Write], exc: StoreError) -> None:
        """Fail every command written and not answered; the next connection may be to a Redis that
        has not seen the scripts (a restart, a failover), so the next write loads them."""
        self._loaded = False
        _fail([item for write in sent for item in write.items[write.read :]], exc)

    def _take(self) -> _Write | None:
        """The next write: up to _MOST queued commands whose callers still wait (None: none of them),
        after SCRIPT LOAD of every script if Redis may not know them."""
        items = list[_Item]()
        queue = self._queue
        while queue and len(items) < _MOST:
            item = queue.popleft()
            if not item.future.done():  # else its deadline came, or its caller stopped waiting
                items.append(item)
        if not items:
            return None
        packed = b"".join([item.packed for item in items])
        loads = 0 if self._loaded else self._scripts
        if loads:
            packed = self._loading + packed
            self._loaded = True  # for the writes after this one on the connection: Redis runs them in order
        return _Write(items, packed, loads, max(item.deadline for item in items))

    async def _replies(self, spell: _Spell) -> None:
        """Read the replies of the spell's writes in flight, in order, each write's within its latest
        deadline; trouble is left in spell.trouble for the lane to raise."""
        sent = spell.sent
        try:
            while sent:
                write = sent[0]
                async with asyncio.timeout_at(write.deadline):
                    await self._read(spell.conn, write)
                sent.popleft()
                spell.stir.set()
        except Exception as exc:  # the lane raises it (its connection context converts it)
            spell.trouble = exc
        finally:
            spell.stir.set()  # the lane learns of the trouble, or that everything was answered

    async def _read(self, conn: AbstractConnection, write: _Write) -> None:
        """Settle each command of write with its reply (a NOSCRIPT-refused call is kept to be sent again)."""
        for _ in range(write.loads):  # an error here (not a script's own) fails the whole write
            await conn.read_response()
        reader = _received(conn)  # the connection's for as long as it stays connected, as it does here
        for item in write.items:
            reply = NOT_ENOUGH_DATA if reader is None else reader.gets()
            if reply is NOT_ENOUGH_DATA:  # not received yet: redis-py waits for it (and raises its errors)
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:  # the reply was read: the connection is fine
                    reply = exc
            elif isinstance(reply, ConnectionError):  # what redis-py raises for it, too
                raise reply
            if isinstance(reply, ResponseError):
                if isinstance(reply, NoScriptError) and item.script is not None:
                    if not self._forgot:
                        self._forgot = True  # no more writes in this spell: the next one loads them
                        self._loaded = False
                        self._forgotten(item.script)
                    self._again.append(item)
                else:
                    _settle(item.future, exception=self._refused(item.key, reply))
            elif reply is None and item.timed:
                late = StoreUnavailableError(f"redis: {item.what} ran after its deadline (clocks far apart?)")
                _settle(item.future, exception=late)
            else:
                _settle(item.future, reply)
            write.read += 1


def _writer(conn: AbstractConnection) -> asyncio.StreamWriter:
    """The stream conn writes to (connected: it has just sent a command), written to without waiting
    by the spell: redis-py's send_packed_command is a coroutine, so a write could only go out at the
    loop's next turn, after every request this turn reads has queued its command."""
    writer = conn._writer
    if writer is None:  # it has been closed meanwhile
        raise ConnectionError("the connection closed")
    return writer


def _received(conn: AbstractConnection) -> hiredis.Reader | None:
    """The hiredis reader of conn's parser, holding the replies already received, when conn reads with
    hiredis: a reply already there is taken from it at once, without redis-py's three coroutines and
    checks per reply (which cost this process more CPU than the rest of reading a write's replies)."""
    reader = getattr(getattr(conn, "_parser", None), "_reader", None)
    return reader if isinstance(reader, hiredis.Reader) else None


def _settle(future: asyncio.Future[Any], result: Any = None, *, exception: BaseException | None = None) -> None:
    if future.done():  # its caller stopped waiting
        return
    if exception is None:
        future.set_result(result)
    else:
        future.set_exception(exception)


_CLOSING: Final = StoreUnavailableError("redis: the store is closing")


def _fail(items: Sequence[_Item], exc: StoreError) -> None:
    for item in items:
        _settle(item.future, exception=exc)
