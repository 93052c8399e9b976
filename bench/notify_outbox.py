"""The Redis outbox (core/notify/redis_outbox.py) against a redis-server of its own (127.0.0.1, a free
port, no persistence), in one process: how long a put takes (one notification, as a call's answer
waits for it; and ten at once), and how many notifications a second lease + delivered moves, with one
consumer and with two (two outboxes on one Redis, as two replicas).

Printed: put's median and 99th percentile in microseconds, and notifications per second delivered
(settled as delivered, no receiver: the outbox's own cost). Bodies are --body bytes.
Run: python bench/notify_outbox.py [--puts 3000] [--moved 20000] [--body 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from redis.asyncio import Redis

from ascrm.core.calls.config import StateSettings
from ascrm.core.calls.redis_connection import connection_pool
from ascrm.core.notify.message import Notification, NotifySettings
from ascrm.core.notify.redis_outbox import RedisOutbox

SETTINGS = NotifySettings(max_pending=1_000_000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_of(url: str) -> Redis:
    return Redis(connection_pool=connection_pool(StateSettings(redis_url=url), max_connections=4, timeout=2.0))


def note(key: str, body: bytes) -> Notification:
    return Notification(key, f"crm{hash(key) % 4}", "missed", 1, time.time(), body)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def puts(box: RedisOutbox, count: int, batch: int, body: bytes, tag: str) -> list[float]:
    """Microseconds of each put of batch notifications, count notifications in all."""
    took = []
    for start in range(0, count, batch):
        batch_of = [note(f"{tag}:{i}", body) for i in range(start, start + batch)]
        began = time.perf_counter()
        await box.put(batch_of)
        took.append((time.perf_counter() - began) * 1e6)
    return took


async def drain(box: RedisOutbox, limit: int) -> int:
    """Lease and deliver until nothing is due; the number delivered (settled four at a time, as a loop
    with concurrency 4 would)."""
    moved = 0
    while leased := await box.lease(limit, time.time()):
        for start in range(0, len(leased), 4):
            await asyncio.gather(*(box.delivered(lease) for lease in leased[start : start + 4]))
        moved += len(leased)
    return moved


async def measure(url: str, args: argparse.Namespace) -> None:
    body = b"x" * args.body
    clients = [client_of(url), client_of(url)]
    a = RedisOutbox(clients[0], "bench:", "a", SETTINGS)
    b = RedisOutbox(clients[1], "bench:", "b", SETTINGS)
    await a.start()
    await b.start()
    await puts(a, 200, 1, body, "warm")
    await drain(a, 100)
    single = await puts(a, args.puts, 1, body, "one")
    print(f"put 1:  median {statistics.median(single):7.0f} us  p99 {percentile(single, 0.99):7.0f} us")
    tens = await puts(a, args.puts, 10, body, "ten")
    print(f"put 10: median {statistics.median(tens):7.0f} us  p99 {percentile(tens, 0.99):7.0f} us")
    await drain(a, 100)
    for consumers in ((a,), (a, b)):
        tag = f"move{len(consumers)}"
        for start in range(0, args.moved, 1000):
            await a.put([note(f"{tag}:{i}", body) for i in range(start, min(start + 1000, args.moved))])
        began = time.perf_counter()
        moved = sum(await asyncio.gather(*(drain(box, 100) for box in consumers)))
        rate = moved / (time.perf_counter() - began)
        print(f"lease+delivered, {len(consumers)} consumer(s): {moved} in all, {rate:8.0f} notifications/s")
    for client in clients:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--moved", type=int, default=20_000)
    parser.add_argument("--body", type=int, default=1500)
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen([*command, "--dir", folder], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)
            asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args))
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
