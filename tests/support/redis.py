"""A real redis-server (Debian's) on a free loopback port, in a folder of its own, with no persistence."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.waiting import poll_until

REDIS_SERVER = shutil.which("redis-server", path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin")))
NOT_INSTALLED = "redis-server is not installed (Debian: apt-get install redis-server)"
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=NOT_INSTALLED)


@dataclass
class RedisServer:
    """A redis-server subprocess on a loopback port, with no persistence; stoppable and pausable."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        """Start redis-server and wait up to timeout seconds until it answers PING."""
        if REDIS_SERVER is None:
            pytest.skip(NOT_INSTALLED)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{(self.workdir / 'redis.log').read_text()}")
            return self._pong()

        if not poll_until(answering, timeout=timeout, interval=0.02):
            self.stop()
            raise RuntimeError(
                f"redis-server did not start in {timeout} s:\n{(self.workdir / 'redis.log').read_text()}"
            )

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        """Terminate redis-server (resuming it first if it is paused) and wait up to timeout seconds for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: connections are reset, nothing is flushed; start() again on the same port."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
