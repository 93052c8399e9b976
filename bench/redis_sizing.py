"""Bytes of Redis memory per stored call, for sizing Redis: calls of a few shapes written through the
Redis store into a redis-server of its own (127.0.0.1, a free port, no persistence).

Shapes (every call as the platform sends it, CRMDData fields filled as in a real call):
  short     CallAccepted, one DTMF
  typical   CallAccepted, three DTMF, GoToTransfer, Transfer (connected), a poll, a decision
  long      60 events (a call in a long menu), polls and four decisions: past one snapshot

Printed per shape: used_memory's growth over the calls written, per call, with the hash's own
MEMORY USAGE of one call beside it. Run: python bench/redis_sizing.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import redis

from ascrm.core.calls import DecisionRecord, StateSettings
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, EventType, ServiceType

T0 = datetime(2027, 3, 16, 10, 30, tzinfo=UTC)
AN, UN = "79161234567", "74951234567"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event(call_id: int, kind: EventType, seconds: int, **fields: str) -> CallEvent:
    at = T0 + timedelta(seconds=seconds)
    return CallEvent(call_id, at, kind, ServiceType.MTSSecretary, AN, UN, **fields)  # type: ignore[arg-type]


async def write_call(store: RedisCallStore, call_id: int, shape: str) -> None:
    rules = RuleSet(revision="sizing")
    events = [event(call_id, EventType.CallAccepted, 0)]
    decisions = 0
    if shape == "short":
        events.append(event(call_id, EventType.DTMF, 3, dtmf="1"))
    elif shape == "typical":
        events += [event(call_id, EventType.DTMF, 3 + i, dtmf=str(i)) for i in range(3)]
        events += [event(call_id, EventType.GoToTransfer, 8, dn1="74957654321")]
        events += [event(call_id, EventType.Transfer, 20, dn1="74957654321", result="1")]
        decisions = 1
    else:
        events += [event(call_id, EventType.DTMF, 3 + i, dtmf=str(i % 10)) for i in range(59)]
        decisions = 4
    for item in events:
        await store.update(item, item.event_time or T0)
    for i in range(decisions):
        record = DecisionRecord(T0, "DTMF", Action.TransferEXT, "1021", f"rule-{i}", None, "sizing")
        await store.record(call_id, record)
    if shape != "short":
        await store.answer_poll(call_id, T0, rules, lambda *_: NO_ACTION)


async def measure(url: str, calls: int) -> None:
    client = redis.Redis.from_url(url)
    for number, shape in enumerate(("short", "typical", "long")):
        prefix = f"{shape}:"
        settings = StateSettings(backend="redis", redis_url=url, key_prefix=prefix, max_calls=10 * calls)
        store = RedisCallStore(settings)
        client.execute_command("MEMORY", "PURGE")
        before = int(client.info("memory")["used_memory"])
        base = (number + 1) * 10**9
        for start in range(0, calls, 50):
            await asyncio.gather(*(write_call(store, base + i, shape) for i in range(start, min(start + 50, calls))))
        await asyncio.sleep(0.5)  # the last snapshots
        await store.close()
        after = int(client.info("memory")["used_memory"])
        one = client.memory_usage(f"{prefix}call:{{{base}}}", samples=0) or 0
        print(f"{shape:<8} {calls} calls: {(after - before) / calls:7.0f} bytes/call in all"
              f" (the call's hash alone: {one} bytes; the index members the rest)")  # fmt: skip
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per shape (default 20000)")
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        print("needs redis-server on PATH", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ascrm-sizing-") as folder:
        cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            version = redis.Redis.from_url(url).info("server")["redis_version"]
            print(f"redis-server {version}")
            asyncio.run(measure(url, args.calls))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
