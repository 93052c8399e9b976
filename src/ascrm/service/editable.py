"""Where editable lists live and how every replica comes to serve the same contents.

The memory backend keeps each list in this process and, with `state.data_dir`, in the file
`<data_dir>/lists/<name>.txt` (one entry per line), rewritten whole at each change: a temporary file,
fsynced, renamed over the old one, the folder fsynced. The Redis backend keeps each list as a set,
`{prefix}list:{<name>}`, and a change counter beside it, `{prefix}list:{<name>}:version`, both changed
by one script call per edit; every replica asks for the counters of its lists every SYNC_SECONDS
(one MGET) and reads a list whose counter moved again (SSCAN, a chunk per call), so an edit is served
everywhere within about SYNC_SECONDS plus the time to read the list. A list the backend does not have
yet is created from its seed file (or empty); one it has keeps its contents, whatever the file says.

Every Redis call is bounded by `state.timeout_ms` and raises StoreUnavailableError past it; the sync
task keeps serving the last contents it read while Redis is away, and logs once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.calls.store import StoreUnavailableError
from ascrm.core.engine import RuleSet
from ascrm.core.rules.editable import EditableList, EditableLists, contents_of
from ascrm.errors import AscrmError

log = structlog.get_logger("ascrm.lists")

SYNC_SECONDS = 0.25  # how often a replica asks whether its lists changed elsewhere
_SCAN_COUNT = 10_000  # entries asked for per SSCAN
_CHUNK = 5_000  # entries per SADD or script call (Lua's unpack has a limit)
_HEADER = "# An editable list of ascrm, kept by its admin API (PUT/DELETE /admin/lists/{name}/{entry}).\n"


class ListFullError(AscrmError):
    """An edit would take a list past `state.max_list_entries`."""


class ListBackend(Protocol):
    """Where the editable lists' contents are kept."""

    async def attach(self, holder: EditableList) -> None:
        """Load holder's contents from the backend, creating the list there from its seed when it is new."""
        ...

    async def change(self, holder: EditableList, entries: Sequence[str], *, add: bool) -> int:
        """Add (or remove) entries (distinct, in the stored form); how many were not (were) there."""
        ...

    async def refresh(self, holders: Sequence[EditableList]) -> None:
        """Take in what other replicas changed in holders' lists."""
        ...

    async def close(self) -> None:
        """Let go of connections."""
        ...


class MemoryLists:
    """The lists of one process, in files under data_dir when given (else lost at exit)."""

    def __init__(self, data_dir: Path | None, max_entries: int) -> None:
        self._folder = None if data_dir is None else data_dir / "lists"
        self._max = max_entries
        self._lock = asyncio.Lock()  # one edit at a time: each rewrites the file whole

    def _path(self, name: str) -> Path | None:
        return None if self._folder is None else self._folder / f"{name}.txt"

    async def attach(self, holder: EditableList) -> None:
        async with self._lock:
            if holder.attached:
                return
            path = self._path(holder.name)
            if path is None:
                holder.replace(holder.seed)
                return
            stored = await anyio.to_thread.run_sync(_read_entries, path)
            if stored is None:
                await anyio.to_thread.run_sync(_write_entries, path, holder.seed.entries)
                holder.replace(holder.seed)
                return
            holder.replace(await anyio.to_thread.run_sync(contents_of, stored))

    async def change(self, holder: EditableList, entries: Sequence[str], *, add: bool) -> int:
        await self.attach(holder)
        async with self._lock:
            before = holder.contents.entries
            after = before.union(entries) if add else before.difference(entries)
            if len(after) > self._max:
                raise ListFullError(_full(holder.name, len(before), len(after) - len(before), self._max))
            if len(after) == len(before):
                return 0
            path = self._path(holder.name)
            if path is not None:
                await anyio.to_thread.run_sync(_write_entries, path, after)
            holder.replace(await anyio.to_thread.run_sync(contents_of, after))
            return abs(len(after) - len(before))

    async def refresh(self, holders: Sequence[EditableList]) -> None:
        return None  # nobody else changes them

    async def close(self) -> None:
        return None


def _read_entries(path: Path) -> list[str] | None:
    """The entries of a list's file; None when there is no file yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreUnavailableError(f"cannot read {path}: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _write_entries(path: Path, entries: Iterable[str]) -> None:
    """Replace path with entries, atomically: a reader, or a crash, sees the old file or the new one."""
    text = _HEADER + "".join(entry + "\n" for entry in sorted(entries))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot write {path}: {exc.strerror or exc}") from None


def _full(name: str, size: int, more: int, limit: int) -> str:
    return f"list {name!r} has {size} entries: {more} more would pass {limit} (state.max_list_entries)"


# KEYS: the set, its counter. ARGV: the limit, then the entries. Returns {added, version, size}, or
# {-1, version, size} when the entries would pass the limit (nothing is added then).
_ADD = """
local size = redis.call('scard', KEYS[1])
local new = 0
for i = 2, #ARGV do
  if redis.call('sismember', KEYS[1], ARGV[i]) == 0 then new = new + 1 end
end
local version = tonumber(redis.call('get', KEYS[2]) or '0')
if size + new > tonumber(ARGV[1]) then return {-1, version, size} end
if new == 0 then return {0, version, size} end
for i = 2, #ARGV, 1000 do
  redis.call('sadd', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return {new, redis.call('incr', KEYS[2]), size + new}
"""
# KEYS: the set, its counter. ARGV: the entries. Returns {removed, version, size}.
_REMOVE = """
local gone = 0
for i = 1, #ARGV, 1000 do
  gone = gone + redis.call('srem', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local version = tonumber(redis.call('get', KEYS[2]) or '0')
if gone > 0 then version = redis.call('incr', KEYS[2]) end
return {gone, version, redis.call('scard', KEYS[1])}
"""
# KEYS: the set, its counter, the seed's staging set. Creates the list from the staged seed unless it
# exists (another replica created it first). Returns the counter.
_CREATE = """
if redis.call('exists', KEYS[2]) == 0 then
  redis.call('del', KEYS[1])
  if redis.call('exists', KEYS[3]) == 1 then redis.call('rename', KEYS[3], KEYS[1]) end
  redis.call('set', KEYS[2], 1)
  return 1
end
redis.call('del', KEYS[3])
return tonumber(redis.call('get', KEYS[2]))
"""


class RedisLists:
    """The lists in Redis, shared by the replicas that use the same key prefix."""

    def __init__(self, settings: StateSettings) -> None:
        self._prefix = settings.key_prefix
        self._max = settings.max_list_entries
        self._budget = settings.timeout_ms / 1000
        pool = connection_pool(settings, max_connections=4, timeout=self._budget)
        self._redis: Redis = Redis(connection_pool=pool)
        self._add = self._redis.register_script(_ADD)
        self._remove = self._redis.register_script(_REMOVE)
        self._create = self._redis.register_script(_CREATE)
        self._locks: dict[str, asyncio.Lock] = {}  # one read or change of a list at a time, per list

    def _keys(self, name: str) -> tuple[str, str]:
        base = f"{self._prefix}list:{{{name}}}"
        return base, f"{base}:version"

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _call(self, what: str, operation: Any) -> Any:
        """operation awaited within the budget; StoreUnavailableError when Redis fails it."""
        try:
            async with asyncio.timeout(self._budget):
                return await operation
        except TimeoutError as exc:
            raise StoreUnavailableError(f"redis: {what} took more than {self._budget * 1000:.0f} ms") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {what}: {type(exc).__name__}: {exc}") from exc

    async def attach(self, holder: EditableList) -> None:
        async with self._lock(holder.name):
            entries_key, version_key = self._keys(holder.name)
            if await self._call("list version", self._redis.get(version_key)) is None:
                staging = f"{entries_key}:seed:{secrets.token_hex(6)}"
                seed = sorted(holder.seed.entries)
                try:
                    for start in range(0, len(seed), _CHUNK):
                        await self._call("list seed", self._redis.sadd(staging, *seed[start : start + _CHUNK]))
                    await self._call("list create", self._create(keys=[entries_key, version_key, staging]))
                finally:
                    if seed:
                        await self._call("list seed", self._redis.delete(staging))
            await self._load(holder)

    async def _load(self, holder: EditableList) -> None:
        """Read the whole list (its counter first: a change while reading is read again next time)."""
        entries_key, version_key = self._keys(holder.name)
        version = int(await self._call("list version", self._redis.get(version_key)) or 0)
        found: set[str] = set()
        cursor = 0
        while True:
            cursor, chunk = await self._call(
                "list read", self._redis.sscan(entries_key, cursor=cursor, count=_SCAN_COUNT)
            )
            found.update(item.decode() for item in chunk)
            if len(found) > self._max + _SCAN_COUNT:  # not a list this server wrote: keep the last copy
                raise StoreUnavailableError(f"redis: list {holder.name!r} has more than {self._max} entries")
            if int(cursor) == 0:
                break
        holder.replace(await anyio.to_thread.run_sync(contents_of, found, version))

    async def change(self, holder: EditableList, entries: Sequence[str], *, add: bool) -> int:
        if not holder.attached:
            await self.attach(holder)
        async with self._lock(holder.name):
            keys = self._keys(holder.name)
            script = self._add if add else self._remove
            args: list[Any] = [self._max, *entries] if add else list(entries)
            changed, version, size = await self._call("list change", script(keys=list(keys), args=args))
            if changed < 0:
                raise ListFullError(_full(holder.name, size, len(entries), self._max))
            contents = holder.contents
            if changed and version == contents.version + 1:  # only this change since: apply it here
                after = contents.entries.union(entries) if add else contents.entries.difference(entries)
                holder.replace(await anyio.to_thread.run_sync(contents_of, after, version))
            elif version != contents.version:
                await self._load(holder)
            return int(changed)

    async def refresh(self, holders: Sequence[EditableList]) -> None:
        if not holders:
            return
        versions = await self._call("list versions", self._redis.mget([self._keys(h.name)[1] for h in holders]))
        for holder, version in zip(holders, versions, strict=True):
            if version is None:  # gone from Redis (flushed): created again from the seed
                holder.attached = False
                await self.attach(holder)
            elif int(version) != holder.contents.version:
                async with self._lock(holder.name):
                    await self._load(holder)

    async def close(self) -> None:
        await self._redis.aclose()


class ListKeeper:
    """The server's editable lists and their backend: attaching the lists the rules declare, edits, and
    the background sync."""

    def __init__(self, settings: StateSettings, registry: EditableLists | None = None) -> None:
        self.registry = registry or EditableLists()
        self.backend: ListBackend = (
            RedisLists(settings)
            if settings.backend == "redis"
            else MemoryLists(settings.data_dir, settings.max_list_entries)
        )

    def holders(self, rules: RuleSet) -> list[EditableList]:
        """The editable lists of rules."""
        return [holder for holder in rules.editable_lists if isinstance(holder, EditableList)]

    async def sync(self, rules: RuleSet) -> None:
        """Attach rules' lists new to this process; take in changes made elsewhere."""
        holders = self.holders(rules)
        for holder in holders:
            if not holder.attached:
                await self.backend.attach(holder)
        await self.backend.refresh(holders)

    async def run(self, rules: Any, stopping: asyncio.Event) -> None:
        """sync(rules.current) every SYNC_SECONDS until stopping is set; an outage is logged once."""
        failing = False
        while not stopping.is_set():
            try:
                await self.sync(rules.current)
                if failing:
                    log.info("lists_sync_resumed")
                    failing = False
            except (StoreUnavailableError, ValueError) as exc:
                if not failing:
                    log.warning("lists_sync_failed", error=str(exc))
                    failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SYNC_SECONDS)

    async def change(self, holder: EditableList, entries: Sequence[str], *, add: bool) -> int:
        """Add or remove entries of holder's list in the backend and here; how many changed."""
        return await self.backend.change(holder, entries, add=add)

    async def close(self) -> None:
        """Let go of the backend's connections."""
        await self.backend.close()
