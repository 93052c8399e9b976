"""The platform's calls under attack: `ascrm emulate` against `ascrm serve` while hostile clients load it.

One `ascrm serve` (example rules, memory store, JSON log to a file) on 127.0.0.1 gets, at once:
- slowloris: --slowloris connections, each sending a request's headers a byte per --slowloris-interval
  seconds and reconnecting when closed;
- a `/ready` flood: --ready-flood keep-alive connections, each sending GET /ready as fast as answered;
- a wrong-password flood: --password-flood keep-alive connections, each POSTing an event with a wrong
  Basic password as fast as answered;
and, after --settle seconds, `ascrm emulate` with --calls concurrent calls for --duration seconds
(--warmup of them not counted). Goal: the emulated calls' p99 under 100 ms and no errors.
Printed: p50/p99/max/errors of the emulated calls, the attack's counts, the server's CPU and peak RSS.

Run: python bench/hostile_load.py [--duration 30] [--calls 200] [--slowloris 1000] [--ready-flood 1000]
     [--password-flood 100] [--server-src DIR] [--server-nofile SOFT:HARD] [--json]
--server-src runs the server from another source tree (e.g. an older commit's src/) with this Python;
--server-nofile starts it with other open-file limits (e.g. a soft limit of 1024 under a higher hard one).
Needs ascrm importable by the Python that runs this script. Loopback only; everything stops at its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
GOAL_P99_MS = 100.0
_RUNNING = re.compile(r"running on (https?)://([^ ]+):(\d+)")
EVENT = b'{"CallID": 99, "EventType": 1, "AN": "79161234567", "UN": "74951234567"}'


@dataclass
class AttackCounts:
    """What one kind of attacking client did and got."""

    connections: int = 0  # connections opened
    connect_errors: int = 0  # refused, reset or timed out while connecting
    closed_by_server: int = 0
    requests: int = 0  # requests answered
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0  # connections lost without an answer

    def as_json(self) -> dict[str, object]:
        """The counts as plain JSON values (asdict would rebuild the Counter from pairs)."""
        return {name: dict(value) if isinstance(value, Counter) else value for name, value in vars(self).items()}


@dataclass(frozen=True, slots=True)
class Result:
    """The run: the emulated calls' figures, each attack's counts, the server's cost."""

    calls: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    violations: int
    attacks: dict[str, dict[str, object]]
    server_cpu_s: float
    server_peak_rss_mib: float
    seconds: float
    passed: bool


# The attacker: one asyncio process holding every hostile connection.


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return status


async def _connect(
    target: tuple[str, int, str], counts: AttackCounts
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to target's host and port from its source address, counted; None (after a pause) if refused."""
    host, port, source = target
    try:
        connected = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), 5)
    except (OSError, TimeoutError):
        counts.connect_errors += 1
        await asyncio.sleep(0.5)
        return None
    counts.connections += 1
    return connected


async def _slowloris(target: tuple[str, int, str], interval: float, stop_at: float, counts: AttackCounts) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        connected = await _connect(target, counts)
        if connected is None:
            continue
        reader, writer = connected
        payload = b"GET /ready HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"z" * 100_000
        try:
            for byte in payload:
                writer.write(bytes([byte]))
                remaining = stop_at - loop.time()
                if remaining <= 0:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(4096), min(interval, remaining))
                except TimeoutError:
                    continue
                counts.closed_by_server += 1
                if data.startswith(b"HTTP/1.1 "):
                    counts.statuses[data.split(b" ", 2)[1].decode()] += 1
                break
        except OSError:
            counts.closed_by_server += 1
        finally:
            writer.close()


async def _flood(target: tuple[str, int, str], request: bytes, stop_at: float, counts: AttackCounts) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        connected = await _connect(target, counts)
        if connected is None:
            continue
        reader, writer = connected
        try:
            while loop.time() < stop_at:
                writer.write(request)
                status = await asyncio.wait_for(_read_answer(reader), max(0.1, stop_at - loop.time()))
                counts.requests += 1
                counts.statuses[str(status)] += 1
        except TimeoutError:
            pass
        except (OSError, asyncio.IncompleteReadError):
            counts.errors += 1
        finally:
            writer.close()


async def _attack(host: str, port: int, args: argparse.Namespace) -> dict[str, AttackCounts]:
    stop_at = asyncio.get_running_loop().time() + args.attack_seconds
    target = (host, port, args.attacker_address)
    counts = {name: AttackCounts() for name in ("slowloris", "ready_flood", "password_flood")}
    wrong = base64.b64encode(b"autosecretary:wrong-password").decode()
    ready = b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
    event = (
        f"POST /CallEvent HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {wrong}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(EVENT)}\r\n\r\n"
    ).encode() + EVENT
    tasks = [_slowloris(target, args.slowloris_interval, stop_at, counts["slowloris"]) for _ in range(args.slowloris)]
    tasks += [_flood(target, ready, stop_at, counts["ready_flood"]) for _ in range(args.ready_flood)]
    tasks += [_flood(target, event, stop_at, counts["password_flood"]) for _ in range(args.password_flood)]
    await asyncio.gather(*tasks)
    return counts


def attacker_main(args: argparse.Namespace) -> int:
    """The --attack-only process: attack host:port for --attack-seconds, print the counts as JSON."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.attack_only.rsplit(":", 1)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    counts = runner(_attack(host, int(port), args))
    print(json.dumps({name: count.as_json() for name, count in counts.items()}))
    return 0


# The orchestrator.


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(
    folder: Path, password: str, server_src: str | None, nofile: tuple[int, int] | None
) -> tuple[subprocess.Popen[bytes], str, int]:
    """`ascrm serve` with the example rules on a free loopback port (nofile: its RLIMIT_NOFILE soft and
    hard limits); the process, host and port."""
    config = folder / "ascrm.yaml"
    config.write_text(
        f"auth: {{platform: [{{user: autosecretary, password: '{password}'}}]}}\n"
        f"rules: {RULES}\nlog: {{format: json}}\nreload: {{watch: false}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    if server_src:
        env["PYTHONPATH"] = server_src
    log = folder / "server.log"
    command = [sys.executable, "-m", "ascrm", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None,  # noqa: PLW1509
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _RUNNING.search(log.read_text(errors="replace"))
        if match:
            return process, match.group(2), int(match.group(3))
        if process.poll() is not None:
            raise RuntimeError(f"ascrm serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("ascrm serve did not start in 30 s")


def measure(args: argparse.Namespace) -> Result:
    """Start the server and the attack, run the emulator through it, stop everything; the figures."""
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="ascrm-hostile-") as tmp:
        nofile = tuple(int(n) for n in args.server_nofile.split(":")) if args.server_nofile else None
        server, host, port = start_server(Path(tmp), password, args.server_src, nofile)  # type: ignore[arg-type]
        attacker = None
        try:
            cpu_before = cpu_seconds(server.pid)
            attack_seconds = args.settle + args.duration + 5
            attack = [
                sys.executable,
                __file__,
                "--attack-only",
                f"{host}:{port}",
                "--attack-seconds",
                str(attack_seconds),
            ]
            for flag in ("slowloris", "slowloris_interval", "ready_flood", "password_flood", "attacker_address"):
                attack += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            attacker = subprocess.Popen(attack, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(args.settle)
            command = [sys.executable, "-m", "ascrm", "emulate", f"http://{host}:{port}", "--calls", str(args.calls)]
            command += ["--duration", str(args.duration), "--warmup", str(args.warmup), "--seed", "1"]
            command += ["--json", "--quiet", "--connections", str(args.connections)]
            env = {**os.environ, "ASCRM_PROBE_PASSWORD": password}
            started = time.monotonic()
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=args.duration + 60, check=False
            )
            seconds = time.monotonic() - started
            out, err = attacker.communicate(timeout=attack_seconds + 30)
            server_cpu = cpu_seconds(server.pid) - cpu_before
            peak = peak_rss_mib(server.pid)
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
            server.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(20)
            if server.poll() is None:
                server.kill()
    if not out.startswith("{"):
        raise RuntimeError(f"the attacker failed: {err[-2000:]}")
    if done.stdout.startswith("{"):
        summary = json.loads(done.stdout)
    else:  # the emulator could not even start its calls (say, no connection accepted): every call failed
        failure = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        print(f"ascrm emulate failed: {failure}", file=sys.stderr)
        nan = float("nan")
        summary = {
            "requests_per_second": 0.0,
            "latency_ms": {"p50": nan, "p99": nan, "max": nan},
            "errors": args.calls,
            "violations": {},
        }
    latency = summary["latency_ms"]
    violations = sum(summary["violations"].values())
    return Result(
        calls=args.calls,
        requests_per_second=summary["requests_per_second"],
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        max_ms=latency["max"],
        errors=summary["errors"],
        violations=violations,
        attacks=json.loads(out),
        server_cpu_s=round(server_cpu, 1),
        server_peak_rss_mib=round(peak, 1),
        seconds=round(seconds, 1),
        passed=latency["p99"] < GOAL_P99_MS and summary["errors"] == 0 and violations == 0,
    )


def report(result: Result) -> str:
    """The human-readable report."""
    lines = [
        f"emulated calls: {result.calls} concurrent, {result.requests_per_second:.0f} req/s over {result.seconds} s",
        f"  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  max {result.max_ms:.1f} ms"
        f"  errors {result.errors}  violations {result.violations}"
        f"  -> {'PASS' if result.passed else 'FAIL'} (goal: p99 < {GOAL_P99_MS:g} ms, no errors)",
        f"server: {result.server_cpu_s} CPU s, peak RSS {result.server_peak_rss_mib} MiB",
        "attack          conns  connect-err  closed-by-server  answered  lost  statuses",
    ]
    for name, counts in result.attacks.items():
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(dict(counts["statuses"]).items()))  # type: ignore[call-overload]
        lines.append(
            f"{name:<15}{counts['connections']:>6}{counts['connect_errors']:>13}{counts['closed_by_server']:>18}"
            f"{counts['requests']:>10}{counts['errors']:>6}  {statuses}"
        )
    return "\n".join(lines)


def main() -> int:
    """Parse the flags; attack only, or orchestrate the whole run and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of emulated calls (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="of them, seconds not counted (default 3)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of attack before the calls start (3)")
    parser.add_argument("--calls", type=int, default=200, help="concurrent emulated calls (default 200)")
    parser.add_argument("--connections", type=int, default=64, help="the emulator's keep-alive connections (64)")
    parser.add_argument("--slowloris", type=int, default=1000, help="slowloris connections (default 1000)")
    parser.add_argument("--slowloris-interval", type=float, default=1.0, help="seconds between their bytes (1)")
    parser.add_argument("--ready-flood", type=int, default=1000, help="/ready flood connections (default 1000)")
    parser.add_argument("--password-flood", type=int, default=100, help="wrong-password connections (default 100)")
    parser.add_argument(
        "--attacker-address",
        default="127.0.0.2",
        help="loopback address the attack comes from (127.0.0.2): not the platform's, as on a real network",
    )
    parser.add_argument("--server-src", help="PYTHONPATH for the server (another source tree's src/)")
    parser.add_argument(
        "--server-nofile",
        metavar="SOFT:HARD",
        help="the server's open-file limits, e.g. 1024:20000 (default: inherited)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--attack-only", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--attack-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack_only:
        return attacker_main(args)
    result = measure(args)
    print(json.dumps(asdict(result), indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
