"""Requests/s of the platform's two requests, on ascrm and on baselines, side by side in one run.

Measured: `POST /CallEvent` where every request is a different call (a CallAccepted CRMDData as the
platform sends it, through the eleven rules of bench/rules_eleven), and `GET /CallEvent/{CallID}`
polls of calls that exist: each round's POST run creates its calls, and the round's poll run polls
them round robin (bench/call_events.lua). The targets, each its own process on 127.0.0.1:

  bare    bench/bare_app.py: Starlette, parses the JSON, answers JSONResponse (GET: a poll route)
  raw     bench/bare_app.py --app raw: one ASGI callable, no framework (the floor of uvicorn itself)
  ascrm   `python -m ascrm serve` of this tree: Basic auth (a scrypt password_hash in the config file),
          JSON logging at info with the decision log written to a file, the rules (--rules), the
          memory store
  NAME    --target NAME=PYTHON: the same `serve` and config with another tree's interpreter
  NAME-redis  with --redis, for ascrm and every NAME: the same `serve` with the Redis store
          (state.backend redis, key_prefix "NAME:") on one redis-server the bench starts

All run under the same uvicorn settings, pinned to CPU 0 (taskset); wrk (-t1, bench/call_events.lua)
runs on CPU 1. With --redis, the bench starts one /usr/bin/redis-server (Debian's) on a free port of
127.0.0.1 in its own temporary folder, without persistence (--save "" --appendonly no), pinned to
CPU 1 with wrk (so the ascrm process keeps CPU 0 to itself, as with the memory store), and stops it
at the end, whatever happened. Before loading, each ascrm target is checked: a wrong password is
refused with 401, and one call of each kind the script sends is answered as
bench/rules_eleven/tests/mix.yaml expects (a Redis target must have stored them under its prefix).
Then an uncounted warm-up, then interleaved rounds: every target's POST run, then every target's poll
run (with --only poll the POST runs still create the calls, uncounted).
A non-2xx answer stops the run (a benchmark of 401s is worthless).

Printed per round and as medians: requests/s, p50/p99 latency, the ratio to bare in the same round,
for a NAME-redis target the ratio to NAME (the memory store) in the same round, the server's CPU time
per request (/proc/PID/stat utime+stime) and its share of a core, errors; then what the decision logs
recorded (per rule), each server's peak RSS and anything odd in the logs (a Redis target's
store_unavailable warnings are answers given without the store: counted there). With --redis, also
redis-server's CPU time per request of each Redis target's runs (medians), its INFO memory
used_memory before the servers started and after they stopped, the keys under each prefix (SCAN) and
the calls each Redis target was sent (POSTs answered, warm-up and checks included), and the used_memory
growth over those calls: "redis bytes/call".

Run: python bench/throughput.py [--duration 5] [--rounds 6] [--only post|poll] [--target old=/path/python]
     [--redis] [--rules DIR] [--connections 32] [--poll-calls N] [--json]
Needs wrk and taskset on PATH, 2 CPUs, ascrm installed next to the Python that runs this script, and
for --redis /usr/bin/redis-server (apt-get install redis-server; Redis 6.0 or newer).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import redis

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "call_events.lua"
DEFAULT_RULES = BENCH / "rules_eleven"
SERVER_CPU, CLIENT_CPU = 0, 1
REDIS_SERVER = Path("/usr/bin/redis-server")  # Debian's
REDIS_CPU = CLIENT_CPU  # with wrk: the ascrm process keeps CPU 0 to itself, as with the memory store
REDIS_SUFFIX = "-redis"  # NAME-redis: NAME's `serve` with the Redis store
GOAL = 0.85  # ascrm's requests/s over the bare endpoint's
KINDS = ("post", "poll")
BASELINES = ("bare", "raw")
USER = "autosecretary"
CONTENT_TYPE = "application/json; charset=UTF-8"
# Every call is new, so the store grows by one call per POST: a cap the run cannot reach keeps every
# request free of evictions (and their call_evicted warnings). About 1 KiB per one-event call.
MAX_CALLS = 2_000_000
# One call of each kind bench/call_events.lua sends: AN, UN, and the answer (EventType, Param) the
# eleven rules give it (bench/rules_eleven/tests/mix.yaml).
SAMPLES = (
    ("78005550042", "74951234567", 4, ""),  # block-spam: Hangup
    ("79160000003", "74951234567", 2, "1021"),  # personal-manager: TransferEXT from the managers map
    ("79030000042", "74951234567", 6, "sales"),  # line-menu: PlayMenuBlock from the lines map
    ("79030000042", "74957654321", 0, ""),  # no rule: no action
)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_RESULT_LINE = re.compile(r"^bench-result (\{.*\})$", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a target's name: its folder, and in a Redis key prefix "NAME:"
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The run cannot give a meaningful figure: a server failed, answered errors, or wrk did."""


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
    cpu_share: float = 0.0  # the server's CPU time over the run's duration (1.0: one core)
    client_share: float = 0.0  # wrk's CPU time over the run's duration: near 1.0, wrk may be the limit
    statuses: dict[str, int] = field(default_factory=dict)
    redis_cpu_us: float = 0.0  # with --redis: redis-server's CPU time per request (any target's run)
    redis_share: float = 0.0  # redis-server's CPU time over the run's duration (it shares CPU 1 with wrk)


@dataclass(frozen=True, slots=True)
class Target:
    """One server under test."""

    name: str
    cmd: list[str]
    ascrm: bool  # an `ascrm serve` (auth, decision log, rules) rather than a baseline
    source: str = ""  # where its code comes from (an ascrm tree and its commit)
    memory: str = ""  # a Redis target: the name of the same tree's memory-store target
    key_prefix: str = ""  # a Redis target: its state.key_prefix


@dataclass(frozen=True, slots=True)
class Row:
    """One target in one round (or its medians): the figures, the ratio to bare in that round and, for a
    Redis target, the ratio to the same tree's memory-store target in that round."""

    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    ratio: float
    cpu_us: float
    cpu_share: float
    client_share: float
    errors: int
    x_memory: float | None = None  # a Redis target's requests/s over its memory-store twin's


@dataclass(frozen=True, slots=True)
class Result:
    """The whole run: per kind, the rows of each round and the medians; what the servers served."""

    settings: dict[str, Any]
    targets: dict[str, str]
    checks: dict[str, list[str]]
    rounds: dict[str, list[list[Row]]]
    medians: dict[str, list[Row]]
    decisions: dict[str, dict[str, int]]
    peak_rss_mib: dict[str, float]
    notes: list[str]
    redis: dict[str, Any] | None = None  # with --redis: the server, its CPU per request, memory per call


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it ends (the benches start servers
    from their main thread), so no server outlives a killed benchmark."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(cmd: list[str], env: dict[str, str], log: Path, *, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a server with stdout and stderr going to log; it is sent SIGTERM if this process dies."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads here
        )


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


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, and kill if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True, slots=True)
class RedisServer:
    """The one redis-server of a --redis run, and the bench's own connection to it."""

    proc: subprocess.Popen[bytes]
    port: int
    client: redis.Redis
    version: str

    @property
    def url(self) -> str:
        """The Redis targets' state.redis_url."""
        return f"redis://127.0.0.1:{self.port}/0"

    def used_memory(self) -> int:
        """INFO memory's used_memory: the bytes Redis has allocated."""
        return int(self.client.info("memory")["used_memory"])

    def dbsize(self) -> int:
        """The keys in database 0."""
        return int(self.client.dbsize())

    def keys_under(self, prefix: str) -> int:
        """The keys whose name starts with prefix, counted with SCAN (Redis keeps answering meanwhile)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free port of 127.0.0.1, pinned to CPU 1, in a temporary folder of its
    own, without persistence; stopped (killed if it lingers) when the block ends, however it ends."""
    if not REDIS_SERVER.is_file():
        raise BenchError(f"--redis needs {REDIS_SERVER} (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ascrm-bench-redis-") as tmp:
        folder = Path(tmp)
        cmd = ["taskset", "-c", str(REDIS_CPU), str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", tmp, "--daemonize", "no"]
        log = folder / "redis-server.log"
        proc = start(cmd, dict(os.environ), log, cwd=folder)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"redis-server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
                try:
                    version = str(client.info("server")["redis_version"])
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise BenchError("redis-server not ready after 30 s") from None
                    time.sleep(0.05)
            if tuple(int(part) for part in version.split(".")[:2]) < (6, 0):
                raise BenchError(f"redis-server {version}: the Redis store needs 6.0 or newer")
            yield RedisServer(proc, port, client, version)
        finally:
            client.close()
            stop(proc)


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


def parse_result_line(out: str) -> WrkRun:
    """The figures bench/call_events.lua's done() prints: exact microseconds and every status counted."""
    match = _RESULT_LINE.search(out)
    if match is None:
        raise BenchError(f"no bench-result line in wrk's output:\n{out}")
    data = json.loads(match.group(1))
    requests, seconds = int(data["requests"]), data["duration_us"] / 1e6
    statuses = {str(code): int(n) for code, n in sorted(data["statuses"].items())}
    errors = data["errors"]
    return WrkRun(
        rps=requests / seconds,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=requests,
        non_2xx=sum(n for code, n in statuses.items() if not code.startswith("2")),
        socket_errors=sum(errors[key] for key in ("connect", "read", "write", "timeout")),
        statuses=statuses,
    )


def run_wrk(
    pid: int, port: int, auth: str, load: dict[str, str], *, duration: int, connections: int, label: str
) -> WrkRun:
    """One wrk run on CPU 1 against 127.0.0.1:port (load: the Lua script's WRK_* settings); also the
    server's CPU time per request. Raises BenchError when any answer was not 2xx."""
    cmd = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    cmd += ["-s", str(LUA), "-H", f"Authorization: {auth}", f"http://127.0.0.1:{port}/CallEvent"]
    env = {**os.environ, **load}
    cpu_before, client_before = cpu_seconds(pid), _children_cpu()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 30, check=False)
    cpu, client = cpu_seconds(pid) - cpu_before, _children_cpu() - client_before
    if done.returncode:
        raise BenchError(f"{label}: wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    run = parse_result_line(done.stdout)
    if run.non_2xx or not run.requests:
        raise BenchError(f"{label}: answers by status {run.statuses}, not all 2xx")
    seconds = run.requests / run.rps
    return replace(run, cpu_us=cpu / run.requests * 1e6, cpu_share=cpu / seconds, client_share=client / seconds)


def _children_cpu() -> float:
    """User + system CPU time of this process's finished children (wrk, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def basic(password: str) -> str:
    """The Authorization header value for the platform's user."""
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


def sample_event(call_id: int, an: str, un: str) -> dict[str, Any]:
    """A CallAccepted CRMDData as bench/call_events.lua sends it."""
    return {
        "CallID": call_id, "EventTime": "2027-03-16T10:30:00+03:00", "EventType": 1, "ServiceType": 1,
        "AN": an, "UN": un, "DN1": "", "DN2": "", "EXT1": "", "EXT2": "", "DTMF": "", "Generic": "", "Result": "",
    }  # fmt: skip


def check_target(target: Target, port: int, password: str, *, expect_rules: bool) -> list[str]:
    """Before any load: each sample call and a poll of it are answered 200 (ascrm: with its content type,
    the rules' answer when expect_rules, and 401 for a wrong password). The answers, or BenchError."""
    url, headers = f"http://127.0.0.1:{port}/CallEvent", {"Authorization": basic(password)}
    answers = []
    with httpx.Client(timeout=10) as client:
        if target.ascrm:
            refused = client.post(url, json=sample_event(1, *SAMPLES[0][:2]), auth=(USER, "wrong-password"))
            if refused.status_code != 401:
                raise BenchError(f"{target.name}: a wrong password was answered {refused.status_code}, not 401")
            answers.append(f"wrong password: {refused.status_code}")
        for call_id, (an, un, action, param) in enumerate(SAMPLES, start=2):
            for method, path, body in (("POST", "", sample_event(call_id, an, un)), ("GET", f"/{call_id}", None)):
                response = client.request(method, url + path, json=body, headers=headers)
                answer = f"{method} AN={an} UN={un}: {response.status_code} {response.text}"
                content_type = response.headers.get("content-type")
                if response.status_code != 200 or (target.ascrm and content_type != CONTENT_TYPE):
                    raise BenchError(f"{target.name}: {answer} (content type {content_type!r})")
                got = response.json()
                decided = (got["EventType"], got["Param"])
                if target.ascrm and expect_rules and method == "POST" and decided != (action, param):
                    raise BenchError(f"{target.name}: {answer}; the rules give EventType {action}, Param {param!r}")
                answers.append(answer)
    return answers


def ascrm_config(folder: Path, rules: Path, password_hash: str, state: dict[str, Any]) -> Path:
    """The config file every ascrm target serves with (JSON is YAML; the same keys in older trees), with
    its state section (the memory store: max_calls only)."""
    config = {
        "listen": {"host": "127.0.0.1"},
        "rules": str(rules),
        "auth": {"platform": [{"user": USER, "password_hash": password_hash}]},
        "log": {"format": "json", "level": "info", "decisions": {"file": "decisions.jsonl"}},
        "state": state,
    }
    path = folder / "ascrm.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def hash_password(password: str) -> str:
    """A scrypt password_hash from this tree's `ascrm hash-password --stdin`."""
    cmd = [sys.executable, "-m", "ascrm", "hash-password", "--stdin"]
    done = subprocess.run(cmd, input=password + "\n", capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def source_of(python: str) -> str:
    """Where `python -m ascrm` comes from: the package's folder and, in a git checkout, its commit."""
    code = "import ascrm, pathlib; print(pathlib.Path(ascrm.__file__).parent)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except OSError as error:
        raise BenchError(f"{python} cannot run: {error}") from None
    if done.returncode:
        raise BenchError(f"{python} cannot import ascrm: {done.stderr.strip()}")
    package = done.stdout.strip()
    head = ["git", "-C", package, "log", "-1", "--format=%h %cs", "--"]
    commit = subprocess.run(head, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    return f"{package} ({commit})" if commit else package


def targets_of(args: argparse.Namespace) -> list[Target]:
    """bare, raw, ascrm and every --target NAME=PYTHON, each (with --redis) followed by NAME-redis."""
    bare = [sys.executable, str(BENCH / "bare_app.py")]
    targets = [
        Target("bare", [*bare, "--app", "starlette"], ascrm=False, source="bench/bare_app.py --app starlette"),
        Target("raw", [*bare, "--app", "raw"], ascrm=False, source="bench/bare_app.py --app raw"),
    ]
    for spec in [f"ascrm={sys.executable}", *args.target]:
        name, sep, python = spec.partition("=")
        if not sep or not _NAME.fullmatch(name) or not python or name in (t.name for t in targets):
            raise BenchError(f"--target takes NAME=PYTHON with a new NAME (letters, digits, _.-), not {spec!r}")
        serve = [python, "-m", "ascrm", "serve", "--config", "ascrm.yaml", "--host", "127.0.0.1"]
        source = source_of(python)
        targets.append(Target(name, serve, ascrm=True, source=source))
        if args.redis:
            redis_source = f"{source}, the Redis store"
            targets.append(Target(name + REDIS_SUFFIX, serve, True, redis_source, memory=name, key_prefix=f"{name}:"))
    names = [t.name for t in targets]
    if len(set(names)) < len(names):
        raise BenchError(f"two targets would be named alike: {', '.join(names)}")
    return targets


class Bench:
    """The servers of one run, and the wrk runs against them."""

    def __init__(self, args: argparse.Namespace, tmp: Path, store: RedisServer | None) -> None:
        self.args, self.tmp, self.store = args, tmp, store
        self.targets = targets_of(args)
        self.password = secrets.token_urlsafe(16)
        self.ports = {t.name: free_port() for t in self.targets}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.answered: Counter[tuple[str, str]] = Counter()  # (target, kind) -> requests answered in all
        self.next_base = (1 + secrets.randbelow(8000)) * 10**12  # CallIDs of one run are 10^9 apart
        self.socket_errors: list[str] = []

    def folder(self, name: str) -> Path:
        """The target's working folder: its config, log and decision log."""
        return self.tmp / name

    def start_all(self) -> dict[str, list[str]]:
        """Start every target pinned to CPU 0, wait for it, check its answers; the answers per target."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCRM_", "PYTHON"))}
        password_hash = hash_password(self.password)
        rules = Path(self.args.rules).resolve()
        checks = {}
        for target in self.targets:
            folder = self.folder(target.name)
            folder.mkdir()
            if target.ascrm:
                ascrm_config(folder, rules, password_hash, self.state(target))
            cmd = ["taskset", "-c", str(SERVER_CPU), *target.cmd, "--port", str(self.ports[target.name])]
            log = folder / "server.log"
            self.procs[target.name] = start(cmd, env, log, cwd=folder)
            wait_ready(self.procs[target.name], self.ports[target.name], basic(self.password), log, timeout=60)
            expect = rules == DEFAULT_RULES.resolve()
            checks[target.name] = check_target(target, self.ports[target.name], self.password, expect_rules=expect)
            if self.store is not None and target.key_prefix:
                keys = self.store.keys_under(target.key_prefix)
                if keys < len(SAMPLES):
                    raise BenchError(f"{target.name}: {keys} keys under {target.key_prefix!r} after the checks' calls")
                checks[target.name].append(f"keys under {target.key_prefix!r} in Redis: {keys}")
        return checks

    def state(self, target: Target) -> dict[str, Any]:
        """The target's state section: the memory store, or the run's Redis under the target's prefix."""
        if not target.key_prefix:
            return {"max_calls": MAX_CALLS}
        if self.store is None:
            raise BenchError(f"{target.name}: a Redis target without --redis")
        url, prefix = self.store.url, target.key_prefix
        return {"backend": "redis", "redis_url": url, "key_prefix": prefix, "max_calls": MAX_CALLS}

    def stop_all(self) -> dict[str, float]:
        """Stop every server; each one's peak RSS in MiB."""
        peaks = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                peaks[name] = peak_rss_mib(proc.pid)
            stop(proc)
        return peaks

    def run(self, target: Target, kind: str, duration: int, calls: tuple[int, int]) -> tuple[WrkRun, tuple[int, int]]:
        """One wrk run of kind against target; for a POST run, the calls it created (first id, count)."""
        proc = self.procs[target.name]
        if proc.poll() is not None:
            raise BenchError(f"{target.name} exited with {proc.returncode}")
        if kind == "post":
            calls = (self.next_base, 0)
            self.next_base += 10**9
        polled = calls[1] if not self.args.poll_calls else min(calls[1], self.args.poll_calls)
        load = {"WRK_MODE": kind, "WRK_CALL_BASE": str(calls[0]), "WRK_CALLS": str(max(polled, 1))}
        port = self.ports[target.name]
        label, auth = f"{target.name} {kind}", basic(self.password)
        store_before = cpu_seconds(self.store.proc.pid) if self.store is not None else 0.0
        run = run_wrk(proc.pid, port, auth, load, duration=duration, connections=self.args.connections, label=label)
        if self.store is not None:
            store_cpu = cpu_seconds(self.store.proc.pid) - store_before
            seconds = run.requests / run.rps
            run = replace(run, redis_cpu_us=store_cpu / run.requests * 1e6, redis_share=store_cpu / seconds)
        self.answered[target.name, kind] += run.requests
        if run.socket_errors:
            self.socket_errors.append(f"{target.name} {kind}: {run.socket_errors} socket errors")
        # The first `requests` CallIDs were answered (a connection's one request in flight at the end
        # is among the last sent), so a poll run polls only calls that exist.
        return run, (calls[0], run.requests) if kind == "post" else calls

    def round(self, duration: int, kinds: tuple[str, ...]) -> dict[str, dict[str, WrkRun]]:
        """Every target's POST run, then every target's poll run of the calls its POST run created
        (an uncounted POST run first when only polls are measured)."""
        runs: dict[str, dict[str, WrkRun]] = {kind: {} for kind in kinds}
        created = {}
        for target in self.targets:
            run, created[target.name] = self.run(target, "post", duration, (0, 0))
            if "post" in kinds:
                runs["post"][target.name] = run
        if "poll" in kinds:
            for target in self.targets:
                runs["poll"][target.name] = self.run(target, "poll", duration, created[target.name])[0]
        return runs


def rows_of(runs: dict[str, WrkRun], memory: dict[str, str]) -> list[Row]:
    """One round's rows: each target's figures, its requests/s over bare's and, for a Redis target (a key
    of memory), over its memory-store twin's."""
    bare = runs["bare"].rps
    return [
        Row(
            name,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.rps / bare,
            r.cpu_us,
            r.cpu_share,
            r.client_share,
            r.non_2xx + r.socket_errors,
            r.rps / runs[memory[name]].rps if name in memory else None,
        )
        for name, r in runs.items()
    ]


def medians_of(rounds: list[list[Row]]) -> list[Row]:
    """Per target, the median of each figure over the rounds (the ratio: the median of the round ratios)."""
    by_target: dict[str, list[Row]] = {}
    for rows in rounds:
        for row in rows:
            by_target.setdefault(row.target, []).append(row)

    def median(rows: list[Row], name: str) -> float:
        return statistics.median(getattr(row, name) for row in rows)

    def median_x_memory(rows: list[Row]) -> float | None:
        ratios = [row.x_memory for row in rows if row.x_memory is not None]
        return statistics.median(ratios) if ratios else None

    return [
        Row(
            name,
            median(rows, "rps"),
            median(rows, "p50_ms"),
            median(rows, "p99_ms"),
            median(rows, "ratio"),
            median(rows, "cpu_us"),
            median(rows, "cpu_share"),
            median(rows, "client_share"),
            sum(row.errors for row in rows),
            median_x_memory(rows),
        )
        for name, rows in by_target.items()
    ]


def read_decisions(folder: Path) -> Counter[str]:
    """The decision log's lines (rotated files included): POSTs per rule ("none": no action), and polls."""
    counts: Counter[str] = Counter()
    for path in sorted(folder.glob("decisions.jsonl*")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "poll_answered":
                counts["poll_answered"] += 1
            else:
                counts[f"{entry.get('event')} {entry.get('rule') or 'none'}"] += 1
    return counts


def log_notes(name: str, log: Path) -> list[str]:
    """Odd lines in a server's main log: not JSON, or warnings and worse (the wrong-password check's
    auth_failed line excepted)."""
    notes, odd = [], Counter[str]()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            notes.append(f"{name} log, not JSON: {line[:200]!r}")
            odd["not JSON"] += 1
            continue
        if entry.get("level") not in ("info", "debug") and entry.get("event") != "auth_failed":
            notes.append(f"{name} logged: {line[:300]}")
            odd[str(entry.get("event"))] += 1
    if len(notes) > 5:  # a Redis target's store_unavailable: answers given without the store
        notes[5:] = [f"{name}: {len(notes)} such lines in all: " + ", ".join(f"{e} {n}" for e, n in odd.most_common())]
    return notes


def decision_notes(bench: Bench) -> tuple[dict[str, dict[str, int]], list[str]]:
    """What each ascrm target's decision log recorded, against the answers wrk counted."""
    decisions, notes = {}, []
    for target in bench.targets:
        if not target.ascrm:
            continue
        counts = read_decisions(bench.folder(target.name))
        decisions[target.name] = dict(sorted(counts.items()))
        posts = sum(n for key, n in counts.items() if key.startswith("event_answered"))
        sent = {kind: bench.answered[target.name, kind] for kind in KINDS}
        if posts < sent["post"] or counts["poll_answered"] < sent["poll"]:
            notes.append(
                f"{target.name}: the decision log has {posts} POSTs and {counts['poll_answered']} polls, "
                f"fewer than wrk's {sent['post']} and {sent['poll']}"
            )
    return decisions, notes


def redis_report(
    bench: Bench,
    store: RedisServer,
    before: dict[str, int],
    runs: dict[str, dict[str, list[WrkRun]]],
    decisions: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """What the run's Redis held once the servers had stopped, against before they started: used_memory,
    the keys under each Redis target's prefix, the calls each created, the growth per call; and
    redis-server's CPU time per request of each Redis target's runs (medians over the rounds).

    Every POST is a new call, so a target's calls are the POSTs its decision log recorded (the checks'
    and the warm-up's included): wrk's count misses the requests in flight when a run stops, which the
    server still answers and stores."""
    used, peak = store.used_memory(), int(store.client.info("memory")["used_memory_peak"])
    per_target, calls = {}, 0
    for target in bench.targets:
        if target.key_prefix:
            logged = sum(n for key, n in decisions.get(target.name, {}).items() if key.startswith("event_answered"))
            created = max(logged, bench.answered[target.name, "post"] + len(SAMPLES))
            keys = store.keys_under(target.key_prefix)
            per_target[target.name] = {"key_prefix": target.key_prefix, "keys": keys, "calls_created": created}
            calls += created
    cpu = {
        kind: {
            name: {
                "redis_cpu_us": statistics.median(run.redis_cpu_us for run in target_runs),
                "redis_share": statistics.median(run.redis_share for run in target_runs),
            }
            for name, target_runs in kind_runs.items()
            if name in per_target
        }
        for kind, kind_runs in runs.items()
    }
    return {
        "server": f"{REDIS_SERVER} {store.version} on 127.0.0.1:{store.port}, CPU {REDIS_CPU}",
        "used_memory_before": before["used_memory"],
        "used_memory_after": used,
        "used_memory_peak": peak,
        "dbsize_before": before["dbsize"],
        "dbsize_after": store.dbsize(),
        "peak_rss_mib": peak_rss_mib(store.proc.pid),
        "targets": per_target,
        "calls_created": calls,
        "bytes_per_call": (used - before["used_memory"]) / calls if calls else 0.0,
        "cpu": cpu,
    }


def measure(args: argparse.Namespace, tmp: Path) -> Result:
    """Start Redis (--redis) and the targets, check them, warm up, run the interleaved rounds, stop them
    (Redis last, whatever happened); the result."""
    with redis_server() if args.redis else contextlib.nullcontext() as store:
        return measure_with(args, tmp, store)


def measure_with(args: argparse.Namespace, tmp: Path, store: RedisServer | None) -> Result:
    """measure() once the run's Redis, if any, answers."""
    kinds = KINDS if args.only is None else (args.only,)
    bench = Bench(args, tmp, store)
    memory = {t.name: t.memory for t in bench.targets if t.memory}
    rounds: dict[str, list[list[Row]]] = {kind: [] for kind in kinds}
    runs_of: dict[str, dict[str, list[WrkRun]]] = {kind: {} for kind in kinds}
    before = {"used_memory": store.used_memory(), "dbsize": store.dbsize()} if store is not None else {}
    try:
        checks = bench.start_all()
        bench.round(args.warmup, kinds)
        for _ in range(args.rounds):
            for kind, runs in bench.round(args.duration, kinds).items():
                rounds[kind].append(rows_of(runs, memory))
                for name, run in runs.items():
                    runs_of[kind].setdefault(name, []).append(run)
    finally:
        peaks = bench.stop_all()
    decisions, notes = decision_notes(bench)
    redis_figures = redis_report(bench, store, before, runs_of, decisions) if store is not None else None
    notes += bench.socket_errors
    for target in bench.targets:
        notes += log_notes(target.name, bench.folder(target.name) / "server.log")
    settings = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "rules": str(Path(args.rules).resolve()),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "decision_log": "a file per ascrm target, in the run's temporary folder",
        "redis": bool(args.redis),
    }
    return Result(
        settings=settings,
        targets={t.name: t.source for t in bench.targets},
        checks=checks,
        rounds=rounds,
        medians={kind: medians_of(kind_rounds) for kind, kind_rounds in rounds.items()},
        decisions=decisions,
        peak_rss_mib=peaks,
        notes=notes,
        redis=redis_figures,
    )


TITLES = {
    "post": "POST /CallEvent, every request a new call (CallAccepted, through the rules)",
    "poll": "GET /CallEvent/{CallID}, polls of the calls the round's POST run created",
}


def header(width: int) -> str:
    """The table's header, the target column width characters wide."""
    head = f"{'round':<8}{'target':<{width}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}{'x memory':>10}"
    return head + f"{'CPU us/req':>11}{'CPU':>7}{'wrk CPU':>9}{'errors':>8}"


def print_rows(label: str, rows: list[Row], width: int) -> None:
    """Rows of the table, one per target ("x memory": a Redis target's ratio to its memory-store twin)."""
    for row in rows:
        x_memory = f"{row.x_memory:>10.3f}" if row.x_memory is not None else " " * 10
        figures = f"{row.rps:>9.0f}{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}{row.ratio:>8.3f}{x_memory}"
        figures += f"{row.cpu_us:>11.1f}{row.cpu_share:>7.0%}{row.client_share:>9.0%}{row.errors:>8}"
        print(f"{label:<8}{row.target:<{width}}{figures}")


def print_redis(figures: dict[str, Any], medians: dict[str, list[Row]], width: int) -> None:
    """The Redis part of the report: the server, its memory per call and CPU per request, redis/memory."""
    mib = 1024 * 1024
    before, after = figures["used_memory_before"], figures["used_memory_after"]
    print(f"\nredis: {figures['server']}, peak RSS {figures['peak_rss_mib']:.0f} MiB")
    print(
        f"  used_memory {before / mib:.1f} MiB before the servers started, {after / mib:.1f} MiB after they"
        f" stopped (peak {figures['used_memory_peak'] / mib:.1f} MiB); DBSIZE {figures['dbsize_before']}"
        f" before, {figures['dbsize_after']} after"
    )
    for name, target in figures["targets"].items():
        cpu = ", ".join(
            f"{kind} {by_name[name]['redis_cpu_us']:.1f} us/req ({by_name[name]['redis_share']:.0%} of a core)"
            for kind, by_name in figures["cpu"].items()
            if name in by_name
        )
        print(
            f"  {name:<{width}} prefix {target['key_prefix']!r}: {target['keys']} keys, {target['calls_created']}"
            f" calls created; redis-server CPU (medians): {cpu}"
        )
    for kind, rows in medians.items():
        ratios = ", ".join(f"{row.target} {row.x_memory:.3f}" for row in rows if row.x_memory is not None)
        print(f"  redis/memory requests/s, {kind} (median of the round ratios): {ratios}")
    growth = after - before
    print(
        f"redis bytes/call ≈ {figures['bytes_per_call']:.0f} (used_memory grew {growth / mib:.1f} MiB"
        f" over {figures['calls_created']} calls created)"
    )


def print_table(result: Result) -> None:
    """The human-readable report."""
    s = result.settings
    width = max(10, 2 + max(len(name) for name in result.targets))
    print(f"{s['connections']} connections, {s['duration_s']} s per run, {s['rounds']} rounds; rules {s['rules']}")
    for name, source in result.targets.items():
        print(f"  {name:<{width - 2}} {source}")
    for kind, rounds in result.rounds.items():
        print(f"\n{TITLES[kind]}")
        print(header(width))
        for number, rows in enumerate(rounds, start=1):
            print_rows(str(number), rows, width)
        print_rows("median", result.medians[kind], width)
    if result.redis is not None:
        print_redis(result.redis, result.medians, width - 2)
    print("\ndecision logs (POSTs per rule, polls):")
    for name, counts in result.decisions.items():
        print(f"  {name:<{width - 2}} " + ", ".join(f"{key}: {n}" for key, n in counts.items()))
    print("peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in result.peak_rss_mib.items()))
    for name, ratio in ((row.target, row.ratio) for row in result.medians.get("post", []) if row.target != "bare"):
        if name not in BASELINES and ratio < GOAL:
            print(f"NOTE: {name}'s POST requests/s are {ratio:.0%} of the bare endpoint's (goal: {GOAL:.0%})")
    for note in result.notes:
        print(f"note: {note}")


def _out_of_time(signum: int, frame: object) -> None:
    raise BenchError("the run took twice as long as it should: stopped")


def main() -> int:
    """Parse the flags, measure, report; exit 1 on socket errors, 2 when the run could not be measured."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted seconds per target and kind (default 2)")
    parser.add_argument("--only", choices=KINDS, help="measure only POSTs or only polls (default: both)")
    parser.add_argument(
        "--poll-calls",
        type=int,
        default=0,
        help="poll only the first N calls of the POST run, round robin (each polled many times, as the platform"
        " polls a call that talks every 3 s); default: every call it created, each about once",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help="also serve `PYTHON -m ascrm serve` (another tree's interpreter) under NAME; repeatable",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help=f"start one {REDIS_SERVER} and add NAME{REDIS_SUFFIX}, the Redis store, for every ascrm target",
    )
    parser.add_argument("--rules", default=str(DEFAULT_RULES), help="the ascrm targets' rules (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        print(f"needs CPUs {SERVER_CPU} and {CLIENT_CPU}", file=sys.stderr)
        return 2
    runs = (args.rounds + 1) * 2 * (2 + (1 + len(args.target)) * (2 if args.redis else 1))
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(2 * runs * (max(args.duration, args.warmup) + 3) + 300)  # a hung run ends, servers stopped
    try:
        with tempfile.TemporaryDirectory(prefix="ascrm-bench-") as tmp:
            result = measure(args, Path(tmp))
    except BenchError as error:
        print(f"throughput.py: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print_table(result)
    return 1 if any("socket errors" in note for note in result.notes) else 0


if __name__ == "__main__":
    sys.exit(main())
