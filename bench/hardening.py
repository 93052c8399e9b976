"""Hostile loads against a real `ascrm serve`: what the platform sees meanwhile, and what they cost.

Three scenarios, each bounded in requests and time, all on loopback:

- login: a wrong-password flood (--connections, --seconds) from 127.0.0.1 against a platform
  credential hashed with scrypt (`ascrm hash-password`, default parameters). Meanwhile the platform
  sends its first request (KDF, never verified before) and two more (the verified-credentials cache)
  from 127.0.0.2. Reported: those latencies, the server's RSS before, at its peak and 10 s after, the
  flood's answers by status.
- metrics: --codes distinct unknown EventType codes, then 20 scrapes of /metrics. Reported: series,
  bytes and the median scrape time.
- ready (needs redis-server): an unauthenticated /ready flood against a server on a Redis that accepts
  12 clients, while the platform sends calls of four events. Reported: /ready answers by status, the
  platform's store_unavailable warnings, PINGs Redis ran.

Run: python bench/hardening.py [login|metrics|ready ...] [--connections 64] [--seconds 5] [--codes 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from throughput import free_port

USER, PASSWORD, ADMIN = "autosecretary", "hardening-pw", ("ops", "hardening-admin")


class Served:
    """`ascrm serve` on a free loopback port with a config, until stop()."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        (folder / "rules.yaml").write_text(
            'rules:\n  - {id: menu, on: DTMF, if: {digits: "123"}, do: {TransferEXT: "1234"}}\n'
        )
        (folder / "ascrm.yaml").write_text(yaml.safe_dump({"rules": "rules.yaml", "log": {"format": "json"}, **config}))
        command = [sys.executable, "-m", "ascrm", "serve", "--config", "ascrm.yaml", "--port", str(self.port)]
        self.log = folder / "server.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(self.log.read_text()[-2000:])

    def rss_mib(self) -> tuple[float, float]:
        """VmRSS and VmHWM in MiB."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


async def flood(url: str, path: str, connections: int, seconds: float, *, auth: Any, source: str) -> Counter[int]:
    """GET path on connections until seconds pass (at most 20,000 requests); answers by status."""
    statuses: Counter[int] = Counter()
    stop_at = time.monotonic() + seconds

    async def worker(index: int) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as http:
            while time.monotonic() < stop_at and statuses.total() < 20_000:
                statuses[(await http.get(path, auth=auth(index) if auth else None)).status_code] += 1

    await asyncio.gather(*(worker(index) for index in range(connections)))
    return statuses


def login(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    hashed = subprocess.run(
        [sys.executable, "-m", "ascrm", "hash-password", "--stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    server = Served(folder, {"auth": {"platform": [{"user": USER, "password_hash": hashed}]}})
    try:
        rss_before = server.rss_mib()[0]

        async def run() -> tuple[Counter[int], list[float]]:
            counter = iter(range(10**9))
            wrong = lambda _: (USER, f"guess-{next(counter)}")  # noqa: E731
            flooding = asyncio.create_task(
                flood(server.url, "/CallEvent", args.connections, args.seconds, auth=wrong, source="127.0.0.1")
            )
            await asyncio.sleep(1)
            latencies = []
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(
                base_url=server.url, transport=transport, auth=(USER, PASSWORD), timeout=60
            ) as http:
                for _ in range(3):
                    started = time.monotonic()
                    status = (await http.get("/CallEvent")).status_code
                    latencies.append(round(time.monotonic() - started, 3) if status == 200 else -status)
            return await flooding, latencies

        statuses, latencies = asyncio.run(run())
        rss_now, peak = server.rss_mib()
        time.sleep(10)
        return {
            "flood_answers": dict(statuses),
            "flood_rate_per_s": round(statuses.total() / args.seconds),
            "platform_latencies_s": latencies,
            "rss_mib": {
                "before": round(rss_before),
                "peak": round(peak),
                "after_flood": round(rss_now),
                "10s_later": round(server.rss_mib()[0]),
            },
        }
    finally:
        server.stop()


def metrics(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    auth = {"platform": [{"user": USER, "password": PASSWORD}], "admin": [{"user": ADMIN[0], "password": ADMIN[1]}]}
    server = Served(folder, {"auth": auth, "reload": {"watch": False}})
    try:
        with httpx.Client(base_url=server.url, auth=(USER, PASSWORD)) as http:
            for i in range(args.codes):
                http.post(
                    "/CallEvent", json={"CallID": 1 + i % 100, "EventType": 10_000 + i, "ServiceType": 10_000 + i}
                )
        times, size, series = [], 0, 0
        with httpx.Client(base_url=server.url, auth=ADMIN) as admin:
            for _ in range(20):
                started = time.monotonic()
                text = admin.get("/metrics").text
                times.append(time.monotonic() - started)
                size, series = len(text), sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        return {
            "codes_sent": args.codes,
            "series": series,
            "bytes": size,
            "scrape_median_ms": round(statistics.median(times) * 1000, 1),
        }
    finally:
        server.stop()


def ready(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        return {"skipped": "redis-server is not installed"}
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    cli = ["redis-cli", "-p", str(port)]
    state = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{port}/0"}
    server = Served(folder, {"auth": {"platform": [{"user": USER, "password": PASSWORD}]}, "state": state})
    try:
        subprocess.run([*cli, "CONFIG", "SET", "maxclients", "12"], check=True, capture_output=True)

        def pings() -> int:
            stats = subprocess.run([*cli, "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
            return int(stats.split("cmdstat_ping:calls=")[1].split(",")[0]) if "cmdstat_ping:" in stats else 0

        before = pings()

        async def run() -> tuple[Counter[int], int]:
            flooding = asyncio.create_task(
                flood(server.url, "/ready", args.connections, args.seconds, auth=None, source="127.0.0.1")
            )
            await asyncio.sleep(0.5)
            kept = 0
            async with httpx.AsyncClient(base_url=server.url, auth=(USER, PASSWORD), timeout=30) as http:
                for call_id in range(1, 21):
                    await http.post("/CallEvent", json={"CallID": call_id, "EventType": 1})
                    for digit in "123":
                        answer = (
                            await http.post("/CallEvent", json={"CallID": call_id, "EventType": 4, "DTMF": digit})
                        ).json()
                    kept += answer["Param"] == "1234"
            return await flooding, kept

        statuses, kept = asyncio.run(run())
        lost = sum(1 for line in server.log.read_text().splitlines() if '"store_unavailable"' in line)
        return {
            "ready_answers": dict(statuses),
            "calls_with_state_kept": f"{kept}/20",
            "store_unavailable_lines": lost,
            "redis_pings": pings() - before,
        }
    finally:
        server.stop()
        redis.terminate()
        redis.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["login", "metrics", "ready"])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--codes", type=int, default=20_000)
    args = parser.parse_args()
    results = {}
    for name in args.scenarios:
        with tempfile.TemporaryDirectory() as folder:
            results[name] = {"login": login, "metrics": metrics, "ready": ready}[name](args, Path(folder))
        print(json.dumps({name: results[name]}), flush=True)


if __name__ == "__main__":
    os.environ.pop("ASCRM_PLATFORM_PASSWORD", None)
    main()
