"""CPU per Redis store operation for calls with a real history, with and without the folds a replica
holds (state.cache_mb): the store alone, against a redis-server of its own (127.0.0.1, a free port,
no persistence), in one process.

Each round runs both settings in turn on --calls calls at once, each call as the platform makes it:
CallAccepted, three DTMF, GoToTransfer, Transfer (connected), a decision recorded, then a poll every
3 s while the caller talks (--polls), and EndCall. Printed per round and as the median of the rounds:
this process's CPU microseconds per store operation, and the ratio of the two.
bench/throughput.py measures the whole server instead, on calls of one event each, which is where
holding folds gains least. Run: python bench/redis_folds.py [--calls 200] [--polls 40] [--rounds 3]
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
from datetime import UTC, datetime, timedelta

from ascrm.core.calls import CallState, DecisionRecord, StateSettings
from ascrm.core.calls.redis import RedisCallStore
from ascrm.core.engine import RuleSet
from ascrm.core.protocol import NO_ACTION, Action, CallEvent, Decision, EventType, ServiceType

T0 = datetime(2027, 3, 16, 10, 30, tzinfo=UTC)
AN, UN = "79161234567", "74951234567"
RULES = RuleSet(revision="folds")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_rules(rules: RuleSet, event: CallEvent | None, call: CallState, now: datetime) -> Decision:
    return NO_ACTION


def event(call_id: int, kind: EventType, at: datetime, **fields: str) -> CallEvent:
    return CallEvent(call_id, at, kind, ServiceType.MTSSecretary, AN, UN, **fields)  # type: ignore[arg-type]


async def one_call(store: RedisCallStore, call_id: int, polls: int) -> int:
    """A call as the platform makes it; the store operations it took."""
    at = T0
    opening = [event(call_id, EventType.CallAccepted, at)]
    opening += [event(call_id, EventType.DTMF, at + timedelta(seconds=2 + i), dtmf=str(i)) for i in range(3)]
    opening += [event(call_id, EventType.GoToTransfer, at + timedelta(seconds=6), dn1="74957654321")]
    opening += [event(call_id, EventType.Transfer, at + timedelta(seconds=15), dn1="74957654321", result="1")]
    for item in opening:
        await store.update(item, item.event_time or at)
        await asyncio.sleep(0)  # the calls interleave as they would
    record = DecisionRecord(at, "GoToTransfer", Action.TransferDN, "74957654321", "sales")
    await store.record(call_id, record)
    at += timedelta(seconds=15)
    for _ in range(polls):
        at += timedelta(seconds=3)
        await store.answer_poll(call_id, at, RULES, no_rules)
    await store.update(event(call_id, EventType.EndCall, at, result="1"), at)
    return len(opening) + 1 + polls + 1


async def measure(url: str, prefix: str, cache_mb: int, calls: int, polls: int) -> tuple[float, int]:
    """CPU microseconds per operation with cache_mb, and the folds from what came since."""
    settings = StateSettings(backend="redis", redis_url=url, key_prefix=prefix, cache_mb=cache_mb)
    store = RedisCallStore(settings)
    try:
        await store.ping()
        started = time.process_time()
        operations = sum(await asyncio.gather(*(one_call(store, n, polls) for n in range(1, calls + 1))))
        cpu = time.process_time() - started
    finally:
        await store.close()
    return cpu / operations * 1e6, store.folds.hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--polls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server is not installed (Debian: apt-get install redis-server)", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            held, whole = [], []
            for n in range(args.rounds):
                without, _ = asyncio.run(measure(url, f"w{n}:", 0, args.calls, args.polls))
                with_folds, hits = asyncio.run(measure(url, f"h{n}:", 64, args.calls, args.polls))
                whole.append(without)
                held.append(with_folds)
                print(
                    f"round {n + 1}: whole hash {without:.0f} us/op, folds held {with_folds:.0f} us/op"
                    f" ({hits} folds of what came since), {with_folds / without:.2f}x"
                )
            ratio = statistics.median(h / w for h, w in zip(held, whole, strict=True))
            print(
                f"median: whole hash {statistics.median(whole):.0f} us/op, folds held"
                f" {statistics.median(held):.0f} us/op, {ratio:.2f}x the CPU"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
