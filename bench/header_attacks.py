"""What oversized request headers cost `ascrm serve`: CPU, memory and how long the event loop stalls.

Against one `ascrm serve` on 127.0.0.1, one attack at a time:
- one header value of --big-mib MiB (default 64), sent in 64 KiB writes;
- --tiny-mib MiB (default 16) of tiny headers (`a: b`);
while a prober sends GET /health every 10 ms on its own connection. Printed per attack: bytes the
server took before closing, the server's CPU seconds and RSS growth (VmRSS, and the peak VmHWM), the
prober's worst answer time (the loop's longest stall), and the attack's answer.

Run: python bench/header_attacks.py [--big-mib 64] [--tiny-mib 16] [--server-src DIR] [--json]
--server-src runs the server from another source tree (e.g. an older commit's src/) with this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

_RUNNING = re.compile(r"running on http://([^ ]+):(\d+)")
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Attack:
    """One attack's cost to the server."""

    name: str
    sent_mib: float  # what the server took before it closed (or all of it)
    seconds: float
    server_cpu_s: float
    rss_growth_mib: float
    peak_rss_mib: float
    worst_probe_ms: float  # the longest a /health answer took meanwhile
    answer: str


def status_mib(pid: int, key: str) -> float:
    """A /proc/PID/status memory figure, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Prober(threading.Thread):
    """GET /health every 10 ms on one keep-alive connection; the worst answer time."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.worst = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.create_connection(self.address, timeout=60) as sock:
            while not self.stop.is_set():
                started = time.monotonic()
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                received = b""
                while not received.endswith(b"}"):
                    received += sock.recv(4096)
                self.worst = max(self.worst, time.monotonic() - started)
                time.sleep(0.01)


def attack(address: tuple[str, int], chunks: Iterator[bytes], limit_s: float) -> tuple[int, str]:
    """Send chunks until the server closes or stops reading (or limit_s); bytes sent and its answer."""
    sent = 0
    with socket.create_connection(address, timeout=limit_s) as sock:
        stop_at = time.monotonic() + limit_s
        try:
            for chunk in chunks:
                if time.monotonic() > stop_at:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        answer = b""
        try:
            sock.settimeout(max(1.0, stop_at - time.monotonic()))
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
    first = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed without an answer)"
    return sent, first


def measure(name: str, pid: int, address: tuple[str, int], chunks: Iterator[bytes]) -> Attack:
    """Run one attack with the prober going; its cost."""
    prober = Prober(address)
    prober.start()
    time.sleep(0.2)
    cpu, rss = cpu_seconds(pid), status_mib(pid, "VmRSS")
    started = time.monotonic()
    sent, answer = attack(address, chunks, limit_s=120)
    seconds = time.monotonic() - started
    time.sleep(0.2)
    prober.stop.set()
    prober.join(130)
    return Attack(
        name=name,
        sent_mib=round(sent / 2**20, 2),
        seconds=round(seconds, 2),
        server_cpu_s=round(cpu_seconds(pid) - cpu, 2),
        rss_growth_mib=round(status_mib(pid, "VmRSS") - rss, 1),
        peak_rss_mib=round(status_mib(pid, "VmHWM"), 1),
        worst_probe_ms=round(prober.worst * 1000, 1),
        answer=answer,
    )


def big_header(mib: int) -> Iterator[bytes]:
    """One header whose value is mib MiB."""
    yield b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: "
    for _ in range(mib * 2**20 // CHUNK):
        yield b"a" * CHUNK
    yield b"\r\n\r\n"


def tiny_headers(mib: int) -> Iterator[bytes]:
    """mib MiB of `a: b` headers."""
    yield b"GET /health HTTP/1.1\r\nHost: x\r\n"
    block = b"a: b\r\n" * (CHUNK // 6)
    for _ in range(mib * 2**20 // len(block)):
        yield block
    yield b"\r\n"


def start_server(folder: Path, server_src: str | None) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """`ascrm serve` on a free loopback port; the process and its address."""
    (folder / "ascrm.yaml").write_text("auth: {platform: [{user: a, password: b}]}\nlog: {format: json}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    if server_src:
        env["PYTHONPATH"] = server_src
    log = folder / "server.log"
    command = [sys.executable, "-m", "ascrm", "serve", "--config", str(folder / "ascrm.yaml"), "--port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _RUNNING.search(log.read_text(errors="replace"))
        if match:
            return process, (match.group(1), int(match.group(2)))
        if process.poll() is not None:
            raise RuntimeError(f"ascrm serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("ascrm serve did not start in 30 s")


def main() -> int:
    """Start a server, run both attacks (each on a fresh server), report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mib", type=int, default=64, help="size of the one big header value (64)")
    parser.add_argument("--tiny-mib", type=int, default=16, help="size of the tiny headers together (16)")
    parser.add_argument("--server-src", help="PYTHONPATH for the server (another source tree's src/)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = []
    for name, chunks in (
        (f"one {args.big_mib} MiB header", big_header(args.big_mib)),
        (f"{args.tiny_mib} MiB of tiny headers", tiny_headers(args.tiny_mib)),
    ):
        with tempfile.TemporaryDirectory(prefix="ascrm-headers-") as tmp:
            server, address = start_server(Path(tmp), args.server_src)
            try:
                results.append(measure(name, server.pid, address, chunks))
            finally:
                server.terminate()
                server.wait(20)
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
        return 0
    print(f"{'attack':<26}{'taken MiB':>10}{'s':>7}{'CPU s':>7}{'RSS +MiB':>9}{'peak MiB':>9}{'stall ms':>9}  answer")
    for r in results:
        print(
            f"{r.name:<26}{r.sent_mib:>10}{r.seconds:>7}{r.server_cpu_s:>7}{r.rss_growth_mib:>9}"
            f"{r.peak_rss_mib:>9}{r.worst_probe_ms:>9}  {r.answer}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
