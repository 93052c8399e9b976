"""Redis clients for asyncio, side by side: one script call per request, as a call store would make it.

Starts Debian's redis-server on a loopback port (pinned to CPU 1), loads one Lua script that does what
a call store's one round trip does (append an event to a list, bump a counter in a hash, trim the list,
return the counter and the list's length), then, for each client in interleaved rounds, runs
--concurrency tasks that call it back to back for --duration seconds and prints calls/s and the
client's CPU time per call (this process, pinned to CPU 0).

Clients: redis-py's asyncio client with its own RESP parser, the same with the hiredis parser,
coredis, and valkey-glide (a Rust core under a Python API). Those not installed are skipped, saying
so: pip install hiredis coredis valkey-glide.

    python bench/redis_clients.py [--duration 3] [--rounds 3] [--concurrency 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

SCRIPT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local events = redis.call('LLEN', KEYS[1])
if events > 256 then redis.call('LTRIM', KEYS[1], -256, -1) end
local seen = redis.call('HINCRBY', KEYS[2], 'events', 1)
redis.call('PEXPIRE', KEYS[1], 600000)
redis.call('PEXPIRE', KEYS[2], 600000)
return {seen, events}
"""
EVENT = b'{"code":4,"at":"2027-03-16T10:30:00+03:00","fields":{"DTMF":"1"}}'

Call = Callable[[int], Awaitable[Any]]  # one script call for a call id


@dataclass(frozen=True)
class Result:
    """One client's run."""

    client: str
    round: int
    calls: int
    calls_per_second: float
    cpu_us_per_call: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server on a loopback port, without persistence, stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis_clients: redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", folder]
        if shutil.which("taskset"):
            command = ["taskset", "-c", "1", *command]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    sys.exit("redis_clients: redis-server did not start")
                time.sleep(0.05)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


async def _redis_py(port: int, parser: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import redis.asyncio as aioredis
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

    parser_class = _AsyncHiredisParser if parser == "hiredis" else _AsyncRESP2Parser
    pool = aioredis.ConnectionPool(host="127.0.0.1", port=port, max_connections=64, parser_class=parser_class)
    client = aioredis.Redis(connection_pool=pool)
    sha = await client.script_load(SCRIPT)

    async def call(call_id: int) -> Any:
        return await client.evalsha(sha, 2, f"{{c{call_id}}}:events", f"{{c{call_id}}}:facts", EVENT)

    return call, client.aclose


async def _coredis(port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import coredis

    client: Any = coredis.Redis(host="127.0.0.1", port=port, max_connections=64)
    stack = contextlib.AsyncExitStack()
    if hasattr(client, "__aenter__"):
        client = await stack.enter_async_context(client)
    sha = await client.script_load(SCRIPT)

    async def call(call_id: int) -> Any:
        return await client.evalsha(sha, keys=[f"{{c{call_id}}}:events", f"{{c{call_id}}}:facts"], args=[EVENT])

    return call, stack.aclose


async def _glide(port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import glide

    config = glide.GlideClientConfiguration([glide.NodeAddress("127.0.0.1", port)])
    client = await glide.GlideClient.create(config)
    script = glide.Script(SCRIPT)

    async def call(call_id: int) -> Any:
        return await client.invoke_script(
            script, keys=[f"{{c{call_id}}}:events", f"{{c{call_id}}}:facts"], args=[EVENT]
        )

    return call, client.close


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


CLIENTS: dict[str, tuple[str, Callable[[int], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]]] = {
    "redis-py": ("redis", lambda port: _redis_py(port, "python")),
    "redis-py+hiredis": ("hiredis", lambda port: _redis_py(port, "hiredis")),
    "coredis": ("coredis", _coredis),
    "valkey-glide": ("glide", _glide),
}


async def _load(call: Call, duration: float, concurrency: int) -> int:
    stop_at = time.perf_counter() + duration
    counts = [0] * concurrency

    async def worker(index: int) -> None:
        call_id = index * 1_000_000_000
        while time.perf_counter() < stop_at:
            answer = await call(call_id + counts[index] % 1000)
            if not answer or answer[1] < 1:
                raise RuntimeError(f"unexpected answer {answer!r}")
            counts[index] += 1

    await asyncio.gather(*(worker(index) for index in range(concurrency)))
    return sum(counts)


async def run_client(name: str, port: int, round_number: int, duration: float, concurrency: int) -> Result:
    """One client's run of duration seconds."""
    _, connect = CLIENTS[name]
    call, close = await connect(port)
    try:
        await _load(call, 0.3, concurrency)  # connections open, code warm
        cpu, wall = time.process_time(), time.perf_counter()
        calls = await _load(call, duration, concurrency)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await close()
    return Result(name, round_number, calls, calls / wall, cpu / calls * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--concurrency", type=int, default=32, help="tasks calling at once (32)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {0})
    names = [name for name, (module, _) in CLIENTS.items() if _installed(module)]
    for name, (module, _) in CLIENTS.items():
        if name not in names:
            print(f"skipped {name}: {module} is not installed", file=sys.stderr)
    results: list[Result] = []
    with redis_server() as port:
        for round_number in range(1, args.rounds + 1):
            for name in names:
                results.append(asyncio.run(run_client(name, port, round_number, args.duration, args.concurrency)))
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
        return
    print(f"{args.concurrency} tasks, {args.duration:g} s per run, {args.rounds} rounds; one EVALSHA per call")
    print(f"{'round':<7} {'client':<18} {'calls/s':>9} {'client CPU us/call':>19}")
    for result in results:
        print(f"{result.round:<7} {result.client:<18} {result.calls_per_second:9.0f} {result.cpu_us_per_call:19.1f}")
    for name in names:
        mine = [result for result in results if result.client == name]
        rate = statistics.median(result.calls_per_second for result in mine)
        cpu = statistics.median(result.cpu_us_per_call for result in mine)
        print(f"{'median':<7} {name:<18} {rate:9.0f} {cpu:19.1f}")


if __name__ == "__main__":
    main()
