"""A real redis-server (Debian's) on a free loopback port, in a folder of its own, with no persistence;
optionally also on a TLS port and a Unix socket, or as a replica of another."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.support.needs import missing, needs
from tests.support.net import free_port
from tests.support.waiting import poll_until

REDIS_SERVER = shutil.which("redis-server", path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin")))
NOT_INSTALLED = "redis-server is not installed (Debian: apt-get install redis-server)"
needs_redis = needs(REDIS_SERVER, NOT_INSTALLED)


@dataclass(frozen=True)
class RedisTLS:
    """The files of a TLS port: the server's certificate and key, and the CA that clients' certificates
    must come from when client_auth (else clients present none)."""

    certfile: Path
    keyfile: Path
    cafile: Path
    client_auth: bool = False


def redis_tls(ca: trustme.CA, folder: Path, *, client_auth: bool = False) -> RedisTLS:
    """A server certificate of ca for 127.0.0.1 and ca's own certificate, written into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(folder / "redis-cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "redis-key.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return RedisTLS(folder / "redis-cert.pem", folder / "redis-key.pem", folder / "ca.pem", client_auth)


def client_certificate(ca: trustme.CA, folder: Path) -> tuple[Path, Path]:
    """A client certificate of ca and its key, written into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("ascrm-client")
    cert.cert_chain_pems[0].write_to_path(str(folder / "client-cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "client-key.pem"))
    return folder / "client-cert.pem", folder / "client-key.pem"


@dataclass
class RedisServer:
    """A redis-server subprocess on a loopback port, with no persistence; stoppable and pausable.

    tls: also serves TLS on tls_port; unix_socket: also listens on socket_path; replica_of: the port of
    a master on 127.0.0.1 to replicate (with tls: its TLS port, replicated over TLS); args: more
    options of redis-server.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tls: RedisTLS | None = None
    tls_port: int = field(default_factory=free_port)
    unix_socket: bool = False
    replica_of: int | None = None
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The redis:// URL of its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """The rediss:// URL of its database 0 on the TLS port."""
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    @property
    def socket_path(self) -> Path:
        """Where its Unix socket is (with unix_socket)."""
        return self.workdir / "redis.sock"

    @property
    def socket_url(self) -> str:
        """The unix:// URL of its database 0 on the Unix socket."""
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10) -> None:
        """Start redis-server and wait up to timeout seconds until it answers PING."""
        if REDIS_SERVER is None:
            missing(NOT_INSTALLED)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        if self.tls is not None:
            command += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.tls.certfile)]
            command += ["--tls-key-file", str(self.tls.keyfile), "--tls-ca-cert-file", str(self.tls.cafile)]
            command += ["--tls-auth-clients", "yes" if self.tls.client_auth else "no"]
        if self.unix_socket:
            command += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
            if self.tls is not None:  # replica_of is the master's TLS port
                command += ["--tls-replication", "yes"]
        command += self.args
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
