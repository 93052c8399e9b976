"""Concurrent calls `ascrm serve` sustains: `ascrm emulate` at increasing N against the example rules (memory store).

Each N gets a fresh `ascrm serve` (info logging to a file, as in production) and one `ascrm emulate` run
with the built-in scenario mix: every call POSTs its events with realistic pauses and is polled every 3 s
while connected. A level passes with p99 answer latency under --p99-ms (50) and no errors or protocol
violations. Printed per N: requests/s, latency percentiles, errors, and the CPU each process used
(the emulator runs on the same machine, so its share is the load generator's cost, not the server's).

Run: python bench/emulate_capacity.py [--calls 1000,2000,3000,4000,5000] [--duration 40] [--warmup 5] [--json]
Needs ascrm importable by the Python that runs this script (PYTHONPATH=src from a clone).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
_RUNNING = re.compile(r"running on (https?://[^ ]+:\d+)")


@dataclass(frozen=True, slots=True)
class Level:
    """One N: what emulate measured, and the CPU seconds of each process."""

    calls: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    violations: int
    server_cpu_s: float
    emulator_cpu_s: float
    seconds: float
    passed: bool


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(folder: Path, password: str) -> tuple[subprocess.Popen[bytes], str]:
    """`ascrm serve` with the example rules on a free loopback port; the process and its base URL."""
    config = folder / "ascrm.yaml"
    config.write_text(
        f"auth: {{platform: [{{user: autosecretary, password: '{password}'}}]}}\n"
        f"rules: {RULES}\nlog: {{format: json}}\nreload: {{watch: false}}\n"
    )
    log = folder / "server.log"
    command = [sys.executable, "-m", "ascrm", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _RUNNING.search(log.read_text(errors="replace"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"ascrm serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("ascrm serve did not start in 30 s")


def run_level(calls: int, args: argparse.Namespace) -> Level:
    """Start a server, load it with `calls` concurrent calls, stop it; the figures."""
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="ascrm-capacity-") as tmp:
        server, url = start_server(Path(tmp), password)
        try:
            before = cpu_seconds(server.pid)
            command = [sys.executable, "-m", "ascrm", "emulate", url, "--calls", str(calls), "--json", "--quiet"]
            command += ["--duration", str(args.duration), "--warmup", str(args.warmup), "--seed", str(calls)]
            command += ["--connections", str(args.connections)]
            env = {**os.environ, "ASCRM_PROBE_PASSWORD": password}
            limit = args.duration + 60
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit, check=False)
            server_cpu = cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait(15)
    if not done.stdout.startswith("{"):
        raise RuntimeError(f"ascrm emulate exited with {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    latency = summary["latency_ms"]
    violations = sum(summary["violations"].values())
    return Level(
        calls=calls,
        requests_per_second=summary["requests_per_second"],
        p50_ms=latency["p50"],
        p90_ms=latency["p90"],
        p99_ms=latency["p99"],
        max_ms=latency["max"],
        errors=summary["errors"],
        violations=violations,
        server_cpu_s=round(server_cpu, 2),
        emulator_cpu_s=summary["emulator_cpu_s"],
        seconds=summary["elapsed_s"],
        passed=latency["p99"] < args.p99_ms and summary["errors"] == 0 and violations == 0,
    )


def table(levels: list[Level], duration: float) -> str:
    """The levels as a text table; CPU as a share of one core over the whole run."""
    lines = [
        "   calls   req/s    p50 ms   p90 ms   p99 ms   max ms  errors  viol.  server CPU  emulator CPU  pass",
    ]
    for level in levels:
        lines.append(
            f"{level.calls:>8} {level.requests_per_second:>7.0f} {level.p50_ms:>9.2f} {level.p90_ms:>8.2f}"
            f" {level.p99_ms:>8.2f} {level.max_ms:>8.1f} {level.errors:>7} {level.violations:>6}"
            f" {level.server_cpu_s / duration:>10.0%} {level.emulator_cpu_s / duration:>13.0%}"
            f"  {'yes' if level.passed else 'no'}"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the levels in order; stop after two failing in a row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1000,2000,3000,4000,5000,6000", help="concurrent calls per level")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per level (default: 40)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not counted at the start (default: 5)")
    parser.add_argument("--connections", type=int, default=64, help="emulator keep-alive connections (64)")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="the latency goal (default: 50)")
    parser.add_argument("--json", action="store_true", help="print the levels as JSON")
    args = parser.parse_args()
    levels: list[Level] = []
    failures = 0
    for calls in (int(n) for n in args.calls.split(",")):
        level = run_level(calls, args)
        levels.append(level)
        print(f"{calls} calls: p99 {level.p99_ms} ms, {level.errors} errors", file=sys.stderr, flush=True)
        failures = 0 if level.passed else failures + 1
        if failures == 2:
            break
    if args.json:
        print(json.dumps([asdict(level) for level in levels], indent=2))
    else:
        print(table(levels, args.duration))
        sustained = [level.calls for level in levels if level.passed]
        print(f"sustained (p99 < {args.p99_ms:g} ms, no errors): {max(sustained) if sustained else 'none'} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
