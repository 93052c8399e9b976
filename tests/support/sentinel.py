"""Real redis-sentinel processes (Debian's) on free loopback ports, watching one master, with settings
that let a test see a failover within seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.needs import missing, needs
from tests.support.net import free_port
from tests.support.redis import RedisTLS
from tests.support.waiting import poll_until

REDIS_SENTINEL = shutil.which("redis-sentinel", path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin")))
NOT_INSTALLED = "redis-sentinel is not installed (Debian: apt-get install redis-sentinel)"
needs_sentinel = needs(REDIS_SENTINEL, NOT_INSTALLED)

DOWN_AFTER_MS = 1000  # a master that does not answer this long is down (Sentinel's default: 30 s)
FAILOVER_TIMEOUT_MS = 3000  # Sentinel's default: 3 minutes


def client(port: int) -> redis.Redis:
    """A client of the server or sentinel on 127.0.0.1:port that neither waits long nor retries."""
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0), protocol=2)


@dataclass
class Sentinels:
    """count redis-sentinel processes watching the master on 127.0.0.1:master_port as master_name,
    a quorum of one; each has a config file of its own in workdir (Sentinel rewrites it).

    tls: each also serves TLS on a port of tls_ports and speaks TLS to the master and its replicas
    (master_port is then the master's TLS port); the plain ports stay, for the helpers here.
    """

    workdir: Path
    master_port: int
    master_name: str = "ascrm-master"
    count: int = 1
    tls: RedisTLS | None = None
    ports: list[int] = field(default_factory=list)
    tls_ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        """Their `host:port` (their TLS ports with tls), as state.sentinels takes them."""
        return [f"127.0.0.1:{port}" for port in (self.tls_ports if self.tls else self.ports)]

    def start(self, timeout: float = 10) -> None:
        """Start them and wait up to timeout seconds until each answers and knows a replica to promote."""
        if REDIS_SENTINEL is None:
            missing(NOT_INSTALLED)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            port = free_port()
            config = self.workdir / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.workdir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}\n"
            )
            if self.tls is not None:
                self.tls_ports.append(free_port())
                with config.open("a") as more:
                    more.write(
                        f"tls-port {self.tls_ports[-1]}\ntls-cert-file {self.tls.certfile}\n"
                        f"tls-key-file {self.tls.keyfile}\ntls-ca-cert-file {self.tls.cafile}\n"
                        "tls-auth-clients no\ntls-replication yes\n"
                    )
            with (self.workdir / f"sentinel-{index}.log").open("ab") as log:
                process = subprocess.Popen(
                    [REDIS_SENTINEL, str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.ports.append(port)
            self.processes.append(process)
        if not poll_until(self._ready, timeout=timeout, interval=0.05):
            logs = "\n".join(path.read_text() for path in sorted(self.workdir.glob("sentinel-*.log")))
            self.stop()
            raise RuntimeError(f"the sentinels did not see the master and a replica in {timeout} s:\n{logs}")

    def _ready(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {process.returncode}")
        try:
            return all(self._sees_a_replica(port) for port in self.ports)
        except redis.RedisError:
            return False

    def _sees_a_replica(self, port: int) -> bool:
        with client(port) as sentinel:
            replicas = sentinel.sentinel_slaves(self.master_name)
        return any(not replica["is_sdown"] and replica["master-link-status"] == "ok" for replica in replicas)

    def master(self) -> tuple[str, int]:
        """The master the first sentinel names now, as SENTINEL MASTERS (what redis-py asks) names it: a
        failover's new master once it has ended (GET-MASTER-ADDR-BY-NAME names it a moment earlier)."""
        with client(self.ports[0]) as sentinel:
            state = sentinel.sentinel_master(self.master_name)
        return str(state["ip"]), int(state["port"])

    def failover(self, timeout: float = 5) -> None:
        """SENTINEL FAILOVER on the first sentinel, again while it finds no replica it may promote yet."""

        def started() -> bool:
            with client(self.ports[0]) as sentinel:
                try:
                    return bool(sentinel.sentinel_failover(self.master_name))
                except redis.ResponseError as exc:
                    if "NOGOODSLAVE" in str(exc):
                        return False
                    raise

        if not poll_until(started, timeout=timeout, interval=0.1):
            pytest.fail(f"SENTINEL FAILOVER found no replica to promote in {timeout} s")

    def stop(self, timeout: float = 10) -> None:
        """Terminate every sentinel and wait up to timeout seconds for each."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
