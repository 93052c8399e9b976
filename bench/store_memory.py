"""What call state costs: memory per live call in the memory store, and requests/s on Redis against memory.

1. Memory: --calls (100,000) calls in one MemoryCallStore, each as the server builds it: CallAccepted,
   CallAnswered, DTMF "1", DTMF "2", Transfer with Result 1280 (CRMDData JSON read by orjson and
   parse_call_event, EventTime with an offset, the empty fields the platform sends), then one decision
   record. Printed: the growth of this process's resident memory (VmRSS, after gc.collect()) divided by
   the number of calls (goal: <= 2 KiB per call), and what one typical state is made of: bytes per
   CallState field, counting only objects of that call (not enum members, rule ids and other objects
   every call shares), plus the store's dict slot and key.
2. Throughput: `ascrm serve` with `state.backend: memory` and with `redis` (a redis-server started
   here on a free loopback port, no persistence), both serving the example rules/. wrk (1 thread)
   POSTs /CallEvent, five events per call (the same five as above, a new CallID every five requests),
   then GETs /CallEvent/{CallID} polls of the calls just made; interleaved rounds (memory, redis,
   memory, redis, ...). Printed: median requests/s per target and kind, the redis/memory ratios, and
   Redis's memory per stored call.

Run: python bench/store_memory.py [--calls 100000] [--duration 5] [--rounds 3] [--no-throughput] [--json]
Needs wrk and redis-server on PATH (Debian: apt-get install wrk redis-server) for part 2, and ascrm
installed next to the Python that runs this script. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import enum
import gc
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis

from ascrm.core.calls import CallState, DecisionRecord, MemoryCallStore, codec
from ascrm.core.protocol import Action, parse_call_event

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from throughput import WrkRun, cpu_seconds, free_port, parse_wrk, start, stop, wait_ready  # noqa: E402

GOAL_BYTES = 2048
TZ = ZoneInfo("Europe/Moscow")
STEPS = [(1, {}), (2, {}), (4, {"DTMF": "1"}), (4, {"DTMF": "2"}), (9, {"Result": "1280"})]
RULE_ID, REVISION = "menu-sales", "rules-3f2a9c"  # shared by every call, as a compiled rule's strings are


def crmddata(call_id: int, event_type: int, second: int, extra: dict[str, str]) -> bytes:
    """One CRMDData body as the platform sends it: every field present, most of them empty."""
    body = {
        "CallID": call_id,
        "EventTime": f"2026-11-27T10:00:{second:02d}+03:00",
        "AN": f"7916{call_id % 10_000_000:07d}",
        "UN": "74951234567",
        "DN1": "",
        "DN2": "",
        "EXT1": "",
        "EXT2": "",
        "DTMF": "",
        "Generic": "",
        "Result": "",
        "EventType": event_type,
        "ServiceType": 1,
    }
    body.update(extra)
    return orjson.dumps(body)


async def fill(store: MemoryCallStore, first_id: int, count: int) -> None:
    """count calls through the store, each its five events and one decision."""
    start_at = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    for call_id in range(first_id, first_id + count):
        for second, (event_type, extra) in enumerate(STEPS):
            event, _ = parse_call_event(orjson.loads(crmddata(call_id, event_type, second, extra)), TZ)
            now = start_at + timedelta(microseconds=call_id * 10 + second)  # a new object per request
            await store.update(event, now)
            if event_type == 4 and extra["DTMF"] == "1":
                record = DecisionRecord(now, "DTMF", Action.TransferDN, "74951110000", RULE_ID, None, REVISION)
                await store.record(call_id, record)


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def referents(obj: Any) -> list[Any]:
    """What obj holds, including what gc does not see (a datetime's tzinfo, a timezone's offset)."""
    if isinstance(obj, datetime):
        return [obj.tzinfo] if obj.tzinfo is not None else []
    if isinstance(obj, timezone):
        return [obj.utcoffset(None)]
    return list(gc.get_referents(obj))


def reachable(root: Any) -> dict[int, Any]:
    """Every object reachable from root (types, modules, functions and enum members left out)."""
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None:
            continue
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, enum.Enum)):
            continue
        seen[id(obj)] = obj
        stack.extend(referents(obj))
    return seen


def breakdown(call: CallState, others: list[CallState]) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes per field of call, counting objects not reachable from the other calls (shared ones);
    and the events' bytes by type of object."""
    shared: set[int] = set()
    for other in others:
        shared |= reachable(other).keys()
    counted: set[int] = {id(call)}
    parts = {"CallState object": sys.getsizeof(call)}
    by_type: dict[str, int] = {}
    for item in fields(call):
        total = 0
        for key, obj in reachable(getattr(call, item.name)).items():
            if key not in shared and key not in counted:
                counted.add(key)
                total += sys.getsizeof(obj)
                if item.name == "events":
                    kind = type(obj).__name__
                    by_type[kind] = by_type.get(kind, 0) + sys.getsizeof(obj)
        parts[item.name] = total
    return parts, by_type


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Part 1's figures."""

    calls: int
    rss_delta_bytes: int
    bytes_per_call: float
    goal_bytes: int
    fill_seconds: float
    full_gc_ms: float
    parts: dict[str, int]
    event_parts: dict[str, int]
    json_record_bytes: int


def measure_memory(count: int) -> MemoryResult:
    """Fill a memory store with count calls; RSS growth per call and one state's breakdown."""
    store = MemoryCallStore(max_calls=count + 10)
    asyncio.run(fill(store, 1, 10))  # warm-up: code paths, caches, interned strings
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    asyncio.run(fill(store, 1_000_000, count))
    elapsed = time.perf_counter() - started
    gc.collect()
    delta = rss_bytes() - before
    started = time.perf_counter()
    gc.collect()  # what a full collection costs with this many states (the server's GC pauses)
    gc_ms = (time.perf_counter() - started) * 1000
    assert len(store) == count + 10, len(store)
    call = asyncio.run(store.get(1_000_000 + count // 2))
    others = [asyncio.run(store.get(1_000_000 + count // 2 + k)) for k in (1, 2)]
    assert call is not None
    assert all(other is not None for other in others)
    parts, event_parts = breakdown(call, [other for other in others if other is not None])
    calls_dict = store._calls  # the store's own table: its slot per call
    parts["store: dict slot + int key"] = round(sys.getsizeof(calls_dict) / len(calls_dict)) + sys.getsizeof(
        call.call_id
    )
    record = len(codec.encode(call))
    return MemoryResult(count, delta, delta / count, GOAL_BYTES, elapsed, gc_ms, parts, event_parts, record)


# ----------------------------------------------------------------------------------------------------
# Part 2: requests/s with the Redis store against the memory store

LUA = r"""
-- POST: five events per call, a new CallID every five requests, from WRK_BASE.
-- GET: polls of the WRK_CALLS calls from WRK_BASE, round robin.
local base = tonumber(os.getenv("WRK_BASE"))
local calls = tonumber(os.getenv("WRK_CALLS") or "1")
local mode = os.getenv("WRK_MODE")
local steps = {{1, ''}, {2, ''}, {4, '"DTMF":"1",'}, {4, '"DTMF":"2",'}, {9, '"Result":"1280",'}}
local n = 0
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  if mode == "GET" then
    return wrk.format("GET", "/CallEvent/" .. (base + n % calls))
  end
  local call = base + math.floor((n - 1) / 5)
  local step = steps[(n - 1) % 5 + 1]
  local body = string.format(
    '{"CallID":%d,"EventTime":"2026-11-27T10:00:0%d+03:00","AN":"7916%07d","UN":"74951234567",' ..
    '"DN1":"","DN2":"","EXT1":"","EXT2":"",%s"Generic":"","EventType":%d,"ServiceType":1}',
    call, (n - 1) % 5, call % 10000000, step[2], step[1])
  return wrk.format("POST", "/CallEvent", nil, body)
end
"""
TARGETS = ("memory", "redis")


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """Part 2's figures: median requests/s per target and kind, and the ratios."""

    median_rps: dict[str, dict[str, float]]
    ratio_post: float
    ratio_get: float
    runs: dict[str, dict[str, list[WrkRun]]]
    redis_bytes_per_call: float  # the records and the sorted sets' entries, per call
    redis_calls: int
    notes: list[str]


def wrk(pid: int, port: int, auth: str, lua: Path, *, duration: int, connections: int, env: dict[str, str]) -> WrkRun:
    """One wrk run against 127.0.0.1:port; also the CPU time of the server (pid) per request."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua)]
    cmd += ["-H", f"Authorization: {auth}", f"http://127.0.0.1:{port}/CallEvent"]
    cpu_before = cpu_seconds(pid)
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    cpu = cpu_seconds(pid) - cpu_before
    if done.returncode:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    run = parse_wrk(done.stdout)
    return replace(run, cpu_us=cpu / max(run.requests, 1) * 1e6)


def redis_client(port: int) -> redis.Redis:
    """A plain client of the bench's redis-server."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:port, no persistence; waits for PONG."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--daemonize", "no", "--dir", str(tmp)]
    proc = start(cmd, dict(os.environ), tmp / "redis-server.log")
    deadline = time.monotonic() + 10
    with redis_client(port) as client:
        while time.monotonic() < deadline:
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
    raise RuntimeError("redis-server did not answer PING")


def measure_throughput(args: argparse.Namespace, tmp: Path) -> ThroughputResult:
    """Start redis-server and both ascrm servers; interleaved POST and GET rounds; stop everything."""
    password = secrets.token_urlsafe(16)
    auth = "Basic " + base64.b64encode(f"autosecretary:{password}".encode()).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    env["ASCRM_PLATFORM_PASSWORD"] = password
    lua = tmp / "calls.lua"
    lua.write_text(LUA)
    redis_port = free_port()
    ports = {name: free_port() for name in TARGETS}
    ascrm = [str(Path(sys.executable).with_name("ascrm")), "serve", "--host", "127.0.0.1"]
    ascrm += ["--rules", str(BENCH.parent / "rules")]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    runs: dict[str, dict[str, list[WrkRun]]] = {name: {"POST": [], "GET": []} for name in TARGETS}
    redis_proc = start_redis(redis_port, tmp)
    empty = redis_allocated(redis_port)
    try:
        for name in TARGETS:
            state = {"backend": name, "redis_url": f"redis://127.0.0.1:{redis_port}/0"} if name == "redis" else {}
            config = tmp / f"{name}.yaml"
            config.write_text(json.dumps({"state": state}))  # JSON is YAML
            cmd = [*ascrm, "--config", str(config), "--port", str(ports[name])]
            procs[name] = start(cmd, env, tmp / f"{name}.log")
            wait_ready(procs[name], ports[name], auth, tmp / f"{name}.log", timeout=30)
        base = 10_000_000
        for round_no in range(args.rounds + 1):  # round 0: warm-up, not counted
            duration = args.warmup if round_no == 0 else args.duration
            for name in TARGETS:
                base += 10_000_000
                load = {"duration": duration, "connections": args.connections}
                pid = procs[name].pid
                posted = wrk(pid, ports[name], auth, lua, **load, env={"WRK_BASE": str(base)})
                calls = max(posted.requests // 5, 1)
                polls = {"WRK_BASE": str(base), "WRK_CALLS": str(calls), "WRK_MODE": "GET"}
                polled = wrk(pid, ports[name], auth, lua, **load, env=polls)
                if round_no:
                    runs[name]["POST"].append(posted)
                    runs[name]["GET"].append(polled)
        used = redis_allocated(redis_port) - empty
        with redis_client(redis_port) as client:
            calls_stored = int(client.dbsize()) - int(client.exists("ascrm:calls", "ascrm:ended"))
    finally:
        for proc in procs.values():
            stop(proc)
        stop(redis_proc)
    medians = {
        name: {kind: statistics.median(run.rps for run in kind_runs) for kind, kind_runs in by_kind.items()}
        for name, by_kind in runs.items()
    }
    notes = [
        f"{name} {kind}: {sum(r.non_2xx for r in rs)} non-2xx, {sum(r.socket_errors for r in rs)} socket errors"
        for name, by_kind in runs.items()
        for kind, rs in by_kind.items()
        if any(r.non_2xx or r.socket_errors for r in rs)
    ]
    for name in TARGETS:
        notes += log_notes(name, tmp / f"{name}.log", args.keep_logs)
    return ThroughputResult(
        median_rps=medians,
        ratio_post=medians["redis"]["POST"] / medians["memory"]["POST"],
        ratio_get=medians["redis"]["GET"] / medians["memory"]["GET"],
        runs=runs,
        redis_bytes_per_call=used / max(calls_stored, 1),
        redis_calls=calls_stored,
        notes=notes,
    )


def log_notes(name: str, log: Path, keep: Path | None) -> list[str]:
    """Lines of a server's log that are no JSON or above info level (the first three); keep a copy."""
    odd = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            odd.append(f"not JSON: {line}")
            continue
        if event.get("level") not in ("info", "debug"):
            odd.append(line)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, keep / log.name)
    return [f"{name} log: {line[:200]}" for line in odd[:3]]


def redis_allocated(port: int) -> int:
    """Bytes Redis has allocated (MEMORY STATS total.allocated)."""
    with redis_client(port) as client:
        return int(client.memory_stats()["total.allocated"])


def print_report(memory: MemoryResult, throughput: ThroughputResult | None) -> None:
    """The human-readable report."""
    print(f"memory store, {memory.calls:,} calls (5 events + 1 decision each, filled in {memory.fill_seconds:.1f} s):")
    verdict = "within" if memory.bytes_per_call <= memory.goal_bytes else "OVER"
    print(f"  RSS growth {memory.rss_delta_bytes / 2**20:.1f} MiB = {memory.bytes_per_call:.0f} bytes per call")
    print(f"  goal <= {memory.goal_bytes} bytes: {verdict}")
    print(f"  one full gc.collect() with these states: {memory.full_gc_ms:.0f} ms")
    print(f"  one typical state, bytes of its own objects by field (its JSON record: {memory.json_record_bytes} B):")
    for name, size in sorted(memory.parts.items(), key=lambda item: -item[1]):
        if size:
            print(f"    {name:<28}{size:>6}")
    print(f"    {'total':<28}{sum(memory.parts.values()):>6}")
    events = ", ".join(f"{kind} {size}" for kind, size in sorted(memory.event_parts.items(), key=lambda kv: -kv[1]))
    print(f"  the {len(STEPS)} events by type of object: {events}")
    if throughput is None:
        return
    print("ascrm serve, example rules, requests/s (median of rounds):")
    print(f"  {'store':<8}{'POST':>10}{'GET':>10}   POST per round / GET per round")
    for name in TARGETS:
        medians, by_kind = throughput.median_rps[name], throughput.runs[name]
        rounds = " / ".join(", ".join(f"{run.rps:.0f}" for run in by_kind[kind]) for kind in ("POST", "GET"))
        print(f"  {name:<8}{medians['POST']:>10.0f}{medians['GET']:>10.0f}   {rounds}")
    print(f"  ratio redis/memory: POST {throughput.ratio_post:.3f}, GET {throughput.ratio_get:.3f}")
    for name in TARGETS:
        by_kind = throughput.runs[name]
        post, get = (statistics.median(r.p99_ms for r in by_kind[k]) for k in ("POST", "GET"))
        cpu_post, cpu_get = (statistics.median(r.cpu_us for r in by_kind[k]) for k in ("POST", "GET"))
        print(f"  {name}: p99 latency POST {post:.2f} ms, GET {get:.2f} ms;", end=" ")
        print(f"ascrm CPU per request POST {cpu_post:.0f} us, GET {cpu_get:.0f} us")
    per_call, calls = throughput.redis_bytes_per_call, throughput.redis_calls
    print(f"  redis memory: {per_call:.0f} bytes per call ({calls:,} calls stored)")
    for note in throughput.notes:
        print(f"note: {note}")


def main() -> int:
    """Parse the flags, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the memory store (default 100000)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of the uncounted first round (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--no-throughput", action="store_true", help="measure memory only (no wrk, no Redis)")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs into this folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    memory = measure_memory(args.calls)  # first, in a process that has started nothing else yet
    throughput = None
    if not args.no_throughput:
        with tempfile.TemporaryDirectory(prefix="ascrm-bench-") as tmp:
            throughput = measure_throughput(args, Path(tmp))
    if args.json:
        print(json.dumps({"memory": asdict(memory), "throughput": throughput and asdict(throughput)}, indent=2))
    else:
        print_report(memory, throughput)
    return 0


if __name__ == "__main__":
    sys.exit(main())
