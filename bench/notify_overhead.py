"""Notifications under load: the same rules served with and without `notify:`, whole calls posted.

Starts a stand-in receiver (aiohttp, 127.0.0.1, answering 200 to every notification and counting them by
Idempotency-Key) and `ascrm serve` twice, memory store with `state.data_dir` (the SQLite outbox, as
production runs it), pinned to CPU 0; wrk and the receiver run on CPU 1. wrk posts whole calls
(bench/call_events.lua, WRK_MODE=calls: CallAccepted, DTMF, ShortTransfer, EndCall; every other call
answered), so one POST in four ends a call:

  plain    the rule set alone
  notify   the same rules and two entries, `ended` (the summary) and `missed` (a body template),
           to the receiver: 1.5 notifications per call, stored before the EndCall's answer, then
           delivered by the same process

Reported: POST requests/s of notify over plain, per interleaved round and their median (the goal:
≥ 0.95), the same ratio by the server's CPU time per request, and whether every notification the calls
made reached the receiver once (waiting for the outbox to drain after the rounds).
Run: python bench/notify_overhead.py [--rounds 11] [--duration 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
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

PASSWORD = "notify-bench-pw"
RULES = """
rules:
  - id: menu
    on: CallAccepted
    do: {PlayMenuBlock: "1"}
  - id: sales
    on: DTMF
    if: {DTMF: "1"}
    do: {TransferEXT: "1001"}
  - id: duty
    on: ShortTransfer
    if: {last_transfer_result: [busy, no_answer]}
    do: {TransferDN: "74950000000"}
"""
NOTIFY = """
targets:
  receiver:
    url: "http://127.0.0.1:{port}/hook"
    secret: "bench-secret-0123456789"
notify:
  - id: call-log
    on: ended
    target: receiver
  - id: missed
    on: missed
    target: receiver
    body: {{phone: "{{caller}}", line: "{{called}}", waited: "{{wait_seconds}}", text: "Missed call from {{caller}}"}}
"""


class Receiver:
    """The stand-in receiver, served from a thread of this process: counts each key it is sent."""

    def __init__(self) -> None:
        self.port, self.keys = free_port(), Counter[str]()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.keys[request.headers.get("Idempotency-Key", "")] += 1
            return web.Response(status=204)

        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()


def serve(kind: str, folder: Path, receiver_port: int, password_hash: str) -> tuple[Any, int]:
    port = free_port()
    rules = folder / f"{kind}.yaml"
    rules.write_text((NOTIFY.format(port=receiver_port) if kind == "notify" else "") + RULES)
    (folder / f"{kind}-data").mkdir()
    config = {
        "listen": {"host": "127.0.0.1"},
        "rules": str(rules),
        "auth": {"platform": [{"user": USER, "password_hash": password_hash}]},
        "log": {"format": "json", "level": "info", "decisions": {"file": f"{kind}-decisions.jsonl"}},
        "state": {"max_calls": 1_000_000, "data_dir": str(folder / f"{kind}-data")},
        "notify": {"max_pending": 10_000_000},
        "reload": {"watch": False},
        "metrics": {"public": True},
    }
    (folder / f"{kind}.json").write_text(json.dumps(config))
    cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "ascrm", "serve"]
    cmd += ["--config", str(folder / f"{kind}.json"), "--port", str(port)]
    proc = start(cmd, dict(os.environ), folder / f"{kind}.log", cwd=folder)
    wait_ready(proc, port, basic(PASSWORD), folder / f"{kind}.log", 30)
    return proc, port


def wrk(port: int, *, duration: int, connections: int, base: int) -> WrkRun:
    cmd = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    cmd += ["-s", str(BENCH / "call_events.lua"), "-H", f"Authorization: {basic(PASSWORD)}"]
    cmd.append(f"http://127.0.0.1:{port}/CallEvent")
    env = {**os.environ, "WRK_MODE": "calls", "WRK_CALL_BASE": str(base)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    run = parse_result_line(done.stdout)
    if run.non_2xx:
        raise RuntimeError(f"answers by status {run.statuses}, not all 2xx")
    return run


def queued(port: int) -> float:
    """Notifications the notify server stored, from its /metrics (public in this bench's config)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    pattern = re.compile(r'^ascrm_notifications_total\{[^}]*outcome="queued"[^}]*\} (\S+)$', re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the outbox to drain")
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CPU})  # the receiver's thread with wrk, off the server's CPU
    receiver = Receiver()
    password_hash = hash_password(PASSWORD)
    base = 10**12
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = {kind: serve(kind, folder, receiver.port, password_hash) for kind in ("plain", "notify")}
        try:
            for kind in servers:  # warm-up
                wrk(servers[kind][1], duration=2, connections=args.connections, base=base)
                base += 10**9
            ratios, cpu_ratios = [], []
            for round_number in range(1, args.rounds + 1):
                runs, cpu = {}, {}
                for kind in ("plain", "notify"):
                    proc, port = servers[kind]
                    before = cpu_seconds(proc.pid)
                    runs[kind] = wrk(port, duration=args.duration, connections=args.connections, base=base)
                    cpu[kind] = (cpu_seconds(proc.pid) - before) / max(1, runs[kind].requests) * 1e6
                    base += 10**9
                ratio = runs["notify"].rps / runs["plain"].rps
                ratios.append(ratio)
                cpu_ratios.append(cpu["plain"] / cpu["notify"])
                print(
                    f"round {round_number}: plain {runs['plain'].rps:.0f} req/s (p99 {runs['plain'].p99_ms:.1f} ms,"
                    f" {cpu['plain']:.0f} us CPU/req), notify {runs['notify'].rps:.0f} req/s"
                    f" (p99 {runs['notify'].p99_ms:.1f} ms, {cpu['notify']:.0f} us CPU/req): {ratio:.3f}x",
                    flush=True,
                )
            print(f"notify / plain, median of {args.rounds} rounds: {statistics.median(ratios):.3f}x")
            print(f"  by server CPU per request (plain / notify), median: {statistics.median(cpu_ratios):.3f}x")
            stored = queued(servers["notify"][1])
            started = time.monotonic()
            while time.monotonic() - started < args.drain and len(receiver.keys) < stored:
                time.sleep(0.5)
            drained = time.monotonic() - started
            repeats = sum(count - 1 for count in receiver.keys.values() if count > 1)
            ended = sum(1 for key in receiver.keys if ":ended:" in key)
            missed = sum(1 for key in receiver.keys if ":missed:" in key)
            print(
                f"stored {stored:.0f} notifications; the receiver got {len(receiver.keys)} ({ended} ended,"
                f" {missed} missed), {repeats} repeats; the last {drained:.1f} s after the load stopped"
            )
        finally:
            for proc, _ in servers.values():
                stop(proc)
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
