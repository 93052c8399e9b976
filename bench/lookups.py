"""Look-ups under load: a rule set routing by a cached source against the same routing from a map, and
the answer latency when every answer asks a CRM that takes 20 ms.

Starts a stand-in CRM (aiohttp, 127.0.0.1, answering `{"extension": "1XXX"}` for any phone after
--delay ms) and `ascrm serve` three ways, memory store, pinned to CPU 0; wrk runs on CPU 1 (bench/
call_events.lua, every request a new call, callers from a set of --callers numbers):

  map       `maps:` holds every caller's extension; the rule reads {managers[AN]}
  cached    the same rule reading {owner}: a source that asks the CRM, whose cache (ttl 10m) holds
            every caller after the warm-up
  uncached  the same source with ttl 0: every answer waits for the CRM (--delay ms); fewer
            connections (--slow-connections), as the platform's calls are not all at once

Reported: requests/s of cached over map, per interleaved round and their median (the goal: ≥ 0.9), the
same ratio by the server's CPU time per request (utime+stime over the run: steadier than requests/s on a
shared machine), and the p50/p99 answer latency of uncached. Many short interleaved rounds, as the
machine's speed drifts. Run: python bench/lookups.py [--rounds 21] [--duration 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from throughput import (
    BENCH,
    CLIENT_CPU,
    SERVER_CPU,
    USER,
    WrkRun,
    basic,
    cpu_seconds,
    free_port,
    hash_password,
    parse_result_line,
    start,
    stop,
    wait_ready,
)

PASSWORD = "lookups-bench-pw"
# The same rule both ways, the value's origin alone differing: a caller the map (or the CRM) does not
# know leaves the param unfilled, so the rule does not answer.
RULE = """
rules:
  - id: personal-manager
    on: CallAccepted
    if: {{AN: {{regex: "^7916\\\\d{{7}}$"}}}}
    do: {{TransferEXT: "{template}"}}
"""


def extension(phone: str) -> str:
    return "1" + phone[-3:].rjust(3, "0")


def crm_app(delay: float, asked: list[int]) -> web.Application:
    async def owner(request: web.Request) -> web.Response:
        asked[0] += 1
        if delay:
            await asyncio.sleep(delay)
        return web.json_response({"extension": extension(request.query.get("phone", ""))})

    app = web.Application()
    app.router.add_get("/owner", owner)
    return app


class StandIn:
    """The stand-in CRM, served from a thread of this process."""

    def __init__(self, delay: float) -> None:
        self.port, self.asked = free_port(), [0]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(delay,), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self, delay: float) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(crm_app(delay, self.asked), access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()


def rules_of(kind: str, folder: Path, crm_port: int, callers: int) -> Path:
    """The rule file of a target: map, cached or uncached."""
    path = folder / f"{kind}.yaml"
    if kind == "map":
        rows = "\n".join(f'    "7916{n:07d}": "{extension(f"7916{n:07d}")}"' for n in range(callers))
        rule = RULE.format(template="{managers[AN]}")
        path.write_text("maps:\n  managers:\n" + rows + "\n" + rule)
        return path
    ttl = "10m" if kind == "cached" else "0s"
    source = f"""
sources:
  owner:
    url: "http://127.0.0.1:{crm_port}/owner?phone={{AN}}"
    value: extension
    timeout: 300ms
    cache: {{ttl: {ttl}, miss_ttl: {ttl}}}
"""
    path.write_text(source + RULE.format(template="{owner}"))
    return path


def serve(kind: str, folder: Path, crm_port: int, callers: int, password_hash: str) -> tuple[Any, int]:
    port = free_port()
    config = {
        "listen": {"host": "127.0.0.1"},
        "rules": str(rules_of(kind, folder, crm_port, callers)),
        "auth": {"platform": [{"user": USER, "password_hash": password_hash}]},
        "log": {"format": "json", "level": "info", "decisions": {"file": f"{kind}-decisions.jsonl"}},
        "lookups": {"budget_ms": 500},
        # no eviction while measuring: at the cap every new call would drop one, with a warning each
        "state": {"max_calls": 1_000_000},
        "reload": {"watch": False},
    }
    (folder / f"{kind}.json").write_text(json.dumps(config))
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "ascrm", "serve"]
    cmd += ["--config", str(folder / f"{kind}.json"), "--port", str(port)]
    proc = start(cmd, dict(os.environ), folder / f"{kind}.log", cwd=folder)
    wait_ready(proc, port, basic(PASSWORD), folder / f"{kind}.log", 30)
    return proc, port


def wrk(port: int, *, duration: int, connections: int, callers: int, base: int) -> WrkRun:
    cmd = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    cmd += ["-s", str(BENCH / "call_events.lua"), "-H", f"Authorization: {basic(PASSWORD)}"]
    cmd.append(f"http://127.0.0.1:{port}/CallEvent")
    env = {**os.environ, "WRK_MODE": "post", "WRK_CALL_BASE": str(base), "WRK_CALLERS": str(callers)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    run = parse_result_line(done.stdout)
    if run.non_2xx:
        raise RuntimeError(f"answers by status {run.statuses}, not all 2xx")
    return run


def answered_by_rule(folder: Path, kind: str) -> int:
    """How many answers the personal-manager rule gave (so a fast run that routed nothing shows)."""
    log = folder / f"{kind}-decisions.jsonl"
    return sum('"rule":"personal-manager"' in line for line in log.read_text().splitlines()) if log.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--duration", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--slow-connections", type=int, default=16)
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=20.0, help="the CRM's answer time for uncached, ms")
    args = parser.parse_args()
    fast, slow = StandIn(0.0), StandIn(args.delay / 1000)
    password_hash = hash_password(PASSWORD)
    base = 10**12
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = {
            "map": serve("map", folder, fast.port, args.callers, password_hash),
            "cached": serve("cached", folder, fast.port, args.callers, password_hash),
            "uncached": serve("uncached", folder, slow.port, args.callers, password_hash),
        }
        try:
            for kind in ("map", "cached"):  # warm-up: every caller once (the cache filled)
                wrk(servers[kind][1], duration=2, connections=args.connections, callers=args.callers, base=base)
                base += 10**9
            asked_after_warmup = fast.asked[0]
            ratios, cpu_ratios = [], []
            for round_number in range(1, args.rounds + 1):
                runs, cpu = {}, {}
                for kind in ("map", "cached"):
                    proc, port = servers[kind]
                    before = cpu_seconds(proc.pid)
                    runs[kind] = wrk(
                        port, duration=args.duration, connections=args.connections, callers=args.callers, base=base
                    )
                    cpu[kind] = (cpu_seconds(proc.pid) - before) / max(1, runs[kind].requests) * 1e6
                    base += 10**9
                ratio = runs["cached"].rps / runs["map"].rps
                ratios.append(ratio)
                cpu_ratios.append(cpu["map"] / cpu["cached"])
                print(
                    f"round {round_number}: map {runs['map'].rps:.0f} req/s (p99 {runs['map'].p99_ms:.1f} ms,"
                    f" {cpu['map']:.0f} us CPU/req), cached source {runs['cached'].rps:.0f} req/s"
                    f" (p99 {runs['cached'].p99_ms:.1f} ms, {cpu['cached']:.0f} us CPU/req): {ratio:.3f}x"
                )
            print(f"cached source / map, median of {args.rounds} rounds: {statistics.median(ratios):.3f}x")
            print(f"  by server CPU per request (map / cached), median: {statistics.median(cpu_ratios):.3f}x")
            print(f"CRM requests during the measured cached runs: {fast.asked[0] - asked_after_warmup}")
            started = slow.asked[0]
            run = wrk(servers["uncached"][1], duration=args.duration, connections=args.slow_connections,
                      callers=10**6, base=base)  # fmt: skip
            print(
                f"uncached source, CRM answering in {args.delay:.0f} ms, {args.slow_connections} connections:"
                f" {run.rps:.0f} req/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms,"
                f" {slow.asked[0] - started} CRM requests"
            )
            for kind in servers:
                print(f"{kind}: {answered_by_rule(folder, kind)} answers by personal-manager")
        finally:
            for proc, _ in servers.values():
                stop(proc)
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
