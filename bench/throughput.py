"""Requests/s of POST /CallEvent: ascrm (Basic auth, JSON logging at info) against a bare Starlette route.

Both run as subprocesses on 127.0.0.1 under the same uvicorn settings; bench/bare_app.py is the baseline.
After checking ascrm's answer (200, `application/json; charset=UTF-8`) and an uncounted warm-up, wrk
(1 thread, bench/post_event.lua) loads the targets in interleaved rounds: bare, ascrm, bare, ascrm, ...
ascrm serves the example rules (--rules), which answer this DTMF "1" event with TransferDN.
Printed: median requests/s, p50/p99 latency of the median round, the ascrm/bare ratio (goal: >= 0.85),
wrk's errors and oddities in ascrm's log.

Run: python bench/throughput.py [--duration 5] [--rounds 6] [--json]
Needs wrk on PATH, and ascrm installed next to the Python that runs this script.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "post_event.lua"
GOAL = 0.85
TARGETS = ("bare", "ascrm")
CONTENT_TYPE = "application/json; charset=UTF-8"
BODY = {
    "CallID": 4711, "EventTime": "2026-11-27T10:00:00+03:00", "AN": "79161234567", "UN": "74951234567",
    "DN1": "", "DN2": "", "EXT1": "", "EXT2": "", "DTMF": "1", "Generic": "", "Result": "",
    "EventType": 4, "ServiceType": 1,
}  # fmt: skip
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True, slots=True)
class WrkRun:
    """One wrk run's figures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_us: float = 0.0  # the server process's CPU time (user + system) per request


@dataclass(frozen=True, slots=True)
class Summary:
    """A target's rounds: median requests/s, and the latencies of the median round (lower middle)."""

    median_rps: float
    p50_ms: float
    p99_ms: float
    median_cpu_us: float
    runs: list[WrkRun]

    @classmethod
    def of(cls, runs: list[WrkRun]) -> Summary:
        middle = sorted(runs, key=lambda run: run.rps)[(len(runs) - 1) // 2]
        cpu = statistics.median(run.cpu_us for run in runs)
        return cls(statistics.median(run.rps for run in runs), middle.p50_ms, middle.p99_ms, cpu, runs)


@dataclass(frozen=True, slots=True)
class Result:
    """The whole benchmark: per target, the ratio of medians, ascrm's answer, and notes on problems."""

    targets: dict[str, Summary]
    ratio: float
    round_ratios: list[float]  # each ascrm round over the bare round just before it
    cpu_ratio: float  # bare's CPU time per request over ascrm's (medians)
    ascrm_answer: str
    notes: list[str]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server with stdout and stderr going to log."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(proc: subprocess.Popen[bytes], port: int, auth: str, log: Path, timeout: float) -> None:
    """Poll GET /CallEvent until any HTTP answer (bare app: 405), the process exits, or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/CallEvent", headers={"Authorization": auth}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args} not ready after {timeout} s")


def check_answer(port: int, auth: str) -> str:
    """POST one event to ascrm; the answer body, or RuntimeError unless 200 with the exact content type."""
    url, headers = f"http://127.0.0.1:{port}/CallEvent", {"Authorization": auth}
    response = httpx.post(url, json=BODY, headers=headers, timeout=5)
    content_type = response.headers.get("content-type")
    if response.status_code != 200 or content_type != CONTENT_TYPE:
        raise RuntimeError(f"ascrm answered {response.status_code}, content type {content_type!r}")
    return response.text


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(pid: int, port: int, auth: str | None, duration: int, connections: int) -> WrkRun:
    """Load POST /CallEvent on port with wrk for duration seconds; also the server's CPU per request."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(LUA)]
    cmd += ["-H", f"Authorization: {auth}"] if auth else []
    cmd.append(f"http://127.0.0.1:{port}/CallEvent")
    env = {**os.environ, "WRK_BODY": json.dumps(BODY)}
    cpu_before = cpu_seconds(pid)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    cpu = cpu_seconds(pid) - cpu_before
    if done.returncode:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    run = parse_wrk(done.stdout)
    return replace(run, cpu_us=cpu / max(run.requests, 1) * 1e6)


def parse_wrk(out: str) -> WrkRun:
    """Read requests/s, the latency percentiles and the error counts from wrk's --latency output."""

    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, out)
        if match is not None:
            return match.group(1)
        if default is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{out}")
        return default

    def ms(text: str) -> float:
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        return float(number) * _UNITS_MS[text[len(number) :]]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkRun(
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=ms(find(r"\s50%\s+(\S+)")),
        p99_ms=ms(find(r"\s99%\s+(\S+)")),
        requests=int(find(r"(\d+) requests in")),
        non_2xx=int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, and kill if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def notes_on(runs: dict[str, list[WrkRun]], log: Path, *, logs_answers: bool) -> list[str]:
    """wrk errors, and odd things in ascrm's log: non-JSON lines, warnings, fewer answers than wrk saw."""
    notes = [
        f"{name}: {sum(r.non_2xx for r in rs)} non-2xx, {sum(r.socket_errors for r in rs)} socket errors"
        for name, rs in runs.items()
        if any(r.non_2xx or r.socket_errors for r in rs)
    ]
    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    answered = sum(event.get("event") == "event_answered" for event in events)
    measured = sum(r.requests for r in runs["ascrm"])
    notes.append(f"ascrm log: {len(lines)} lines, {answered} event_answered (measured rounds: {measured})")
    if logs_answers and answered < measured:
        notes.append("ascrm logged fewer answers than wrk counted in the measured rounds")
    notes += [f"ascrm log, not JSON: {line[:200]!r}" for line in lines if not line.startswith("{")][:3]
    notes += [f"ascrm logged: {event}" for event in events if event.get("level") not in ("info", "debug")][:5]
    return notes


def measure(args: argparse.Namespace, tmp: Path) -> Result:
    """Start both servers, check ascrm, run warm-up and the interleaved rounds, stop the servers."""
    password = secrets.token_urlsafe(16)
    auth = "Basic " + base64.b64encode(f"autosecretary:{password}".encode()).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    env["ASCRM_PLATFORM_PASSWORD"] = password
    ports = {name: free_port() for name in TARGETS}
    ascrm = [str(Path(sys.executable).with_name("ascrm")), "serve", "--host", "127.0.0.1"]
    ascrm += ["--rules", args.rules]
    if args.ascrm_log_level:
        (tmp / "ascrm.yaml").write_text(f"log: {{level: {args.ascrm_log_level}}}\n")
        ascrm += ["--config", str(tmp / "ascrm.yaml")]
    cmds = {"bare": [sys.executable, str(BENCH / "bare_app.py")], "ascrm": ascrm}
    auths = {"bare": None, "ascrm": auth}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    runs: dict[str, list[WrkRun]] = {name: [] for name in TARGETS}
    try:
        for name in TARGETS:
            procs[name] = start([*cmds[name], "--port", str(ports[name])], env, tmp / f"{name}.log")
            wait_ready(procs[name], ports[name], auth, tmp / f"{name}.log", timeout=30)
        answer = check_answer(ports["ascrm"], auth)
        for name in TARGETS:
            run_wrk(procs[name].pid, ports[name], auths[name], args.warmup, args.connections)
        for _ in range(args.rounds):
            for name in TARGETS:
                run = run_wrk(procs[name].pid, ports[name], auths[name], args.duration, args.connections)
                runs[name].append(run)
    finally:
        for proc in procs.values():
            stop(proc)
    summaries = {name: Summary.of(runs[name]) for name in TARGETS}
    ratio = summaries["ascrm"].median_rps / summaries["bare"].median_rps
    round_ratios = [a.rps / b.rps for a, b in zip(runs["ascrm"], runs["bare"], strict=True)]
    cpu_ratio = summaries["bare"].median_cpu_us / summaries["ascrm"].median_cpu_us
    notes = notes_on(runs, tmp / "ascrm.log", logs_answers=args.ascrm_log_level in (None, "info", "debug"))
    return Result(summaries, ratio, round_ratios, cpu_ratio, answer, notes)


def print_table(result: Result) -> None:
    """The human-readable report."""
    header = f"{'target':<8}{'req/s (median)':>16}{'p50 ms':>10}{'p99 ms':>10}{'CPU us/req':>12}"
    print(f"{header}   req/s per round")
    for name, s in result.targets.items():
        rounds = ", ".join(f"{run.rps:.0f}" for run in s.runs)
        figures = f"{s.median_rps:>16.0f}{s.p50_ms:>10.2f}{s.p99_ms:>10.2f}{s.median_cpu_us:>12.1f}"
        print(f"{name:<8}{figures}   {rounds}")
    print(f"ratio ascrm/bare: {result.ratio:.3f} (goal >= {GOAL})")
    paired = ", ".join(f"{r:.3f}" for r in result.round_ratios)
    print(f"  per round: {paired}; median {statistics.median(result.round_ratios):.3f}")
    print(f"  CPU time per request, bare/ascrm: {result.cpu_ratio:.3f}")
    print(f"ascrm answer: {result.ascrm_answer}")
    for note in result.notes:
        print(f"note: {note}")
    if result.ratio < GOAL:
        print(f"NOTE: ascrm is below the goal of {GOAL:.0%} of the bare endpoint's requests/s")


def main() -> int:
    """Parse the flags, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per target (default 6)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted seconds per target (default 2)")
    parser.add_argument("--ascrm-log-level", help="run ascrm with `log: {level: LEVEL}` (default: info)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--rules", default=str(BENCH.parent / "rules"), help="ascrm's rules (default: the example rules/)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ascrm-bench-") as tmp:
        result = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
