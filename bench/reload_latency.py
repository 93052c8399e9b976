"""Answer latency while the rules reload: a big set, a big list file, and each hostile file.

For each case, starts `ascrm serve` on 127.0.0.1 (no watcher) with a one-rule set, loads it with
--clients concurrent keep-alive clients POSTing CallAccepted events, then writes the case's rule files
(bench/hostile_rules.py) over the served ones and triggers a reload with POST /admin/reload?force=true.
Reported per case: the reload's outcome and duration, the server's peak RSS during it (VmHWM, reset
just before), and the latency percentiles of the answers to the requests sent while it ran (goal: p99
under 50 ms), next to the same figures for the second before it ("idle").

Run: python bench/reload_latency.py [--clients 4] [--only CASE] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hostile_rules import GOOD, HOSTILE, write
from throughput import free_port, start, wait_ready

from ascrm.tools.platform.tally import nearest_rank

USER, PASSWORD, ADMIN = "autosecretary", "latency-pw", ("ops", "latency-admin")
SMALL = "rules:\n  - id: answer\n    on: CallAccepted\n    do: {PlayPrompt: prompt_small}\n"


@dataclass
class Samples:
    """(sent at, seconds to answer) of every request, and the failures."""

    timings: list[tuple[float, float]] = field(default_factory=list)
    failures: int = 0


async def load(url: str, stop: asyncio.Event, samples: Samples, worker: int) -> None:
    """POST CallAccepted events with fresh CallIDs one after another until stop."""
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=10) as http:
        call_id = worker * 10_000_000
        while not stop.is_set():
            call_id += 1
            sent = time.monotonic()
            try:
                response = await http.post("/CallEvent", json={"CallID": call_id, "EventType": "CallAccepted"})
                ok = response.status_code == 200
            except httpx.TransportError:
                ok = False
            samples.timings.append((sent, time.monotonic() - sent))
            samples.failures += not ok


def percentiles(latencies: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max in ms (nearest rank)."""
    if not latencies:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(latencies)

    def rank(percent: float) -> float:
        return round(nearest_rank(ordered, percent) * 1000, 1)

    return {"count": len(ordered), "p50": rank(50), "p99": rank(99), "max": round(ordered[-1] * 1000, 1)}


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_mb(pid: int) -> float:
    """The process's peak RSS (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def measure(url: str, pid: int, case: str, rules: Path, clients: int) -> dict[str, object]:
    staged = write(case, rules.parent / "staged")  # before the load: writing big files here would stall it
    samples, stop = Samples(), asyncio.Event()
    workers = [asyncio.create_task(load(url, stop, samples, n + 1)) for n in range(clients)]
    await asyncio.sleep(2.0)  # warm up, then one second of idle figures
    idle_from = time.monotonic() - 1.0
    for item in staged.parent.iterdir():
        target = rules / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    reset_peak(pid)
    async with httpx.AsyncClient(base_url=url, auth=ADMIN, timeout=120) as admin:
        began = time.monotonic()
        response = await admin.post("/admin/reload", params={"force": "true"})
        ended = time.monotonic()
    peak = peak_mb(pid)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)
    body = response.json()
    problems = body.get("problems") or []
    return {
        "status": body.get("status", response.status_code),
        "reload_seconds": round(ended - began, 2),
        "peak_rss_mb": peak,
        "answer_bytes": len(response.content),
        "first_problem": str(problems[0])[:160] if problems else "",
        "failures": samples.failures,
        "idle": percentiles([took for sent, took in samples.timings if idle_from <= sent < began]),
        "during": percentiles([took for sent, took in samples.timings if began <= sent <= ended]),
    }


def run_case(case: str, clients: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ascrm-latency-") as tmp:
        folder = Path(tmp)
        rules = folder / "rules"
        rules.mkdir()
        (rules / "rules.yaml").write_text(SMALL)
        port = free_port()
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "rules": str(rules / "rules.yaml"),
            "reload": {"watch": False},
            "auth": {
                "platform": [{"user": USER, "password": PASSWORD}],
                "admin": [{"user": ADMIN[0], "password": ADMIN[1]}],
            },
            "log": {"format": "json", "level": "warning"},
        }
        (folder / "ascrm.yaml").write_text(json.dumps(config))
        log = folder / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = start([sys.executable, "-m", "ascrm", "serve", "--config", str(folder / "ascrm.yaml")], env, log)
        try:
            auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            wait_ready(server, port, auth, log, timeout=30)
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", server.pid, case, rules, clients))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except Exception:
                server.kill()
                server.wait()
        result["log_bytes"] = log.stat().st_size
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--only", action="append", help="run only these cases (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {case: run_case(case, args.clients) for case in args.only or [*GOOD, *HOSTILE]}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for case, row in results.items():
            print(f"{case:14} " + "  ".join(f"{key}={value}" for key, value in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
