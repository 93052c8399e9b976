"""`ascrm serve` as a subprocess on a free loopback port: started, waited for, talked to, stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.waiting import poll_until

PASSWORD = "s3cret-pässword"
USER = "autosecretary"


def platform_config(**extra: Any) -> dict[str, Any]:
    """A config with the test credentials for the platform role (${TEST_PLATFORM_PASSWORD}), plus extra keys."""
    config: dict[str, Any] = {
        "auth": {"platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}]},
        "log": {"format": "json"},
    }
    config.update(extra)
    return config


@dataclass
class Server:
    """A running `ascrm serve` process."""

    process: subprocess.Popen[str]
    base_url: str
    log_path: Path
    auth: tuple[str, str] = (USER, PASSWORD)
    verify: Any = True
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on."""
        host, port = self.base_url.split("://")[1].split("/")[0].split(":")
        return host, int(port)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for base_url with the platform's credentials unless told otherwise."""
        kwargs.setdefault("auth", self.auth)
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("base_url", self.base_url)
        kwargs.setdefault("timeout", 10)
        client = httpx.Client(**kwargs)
        self._clients.append(client)
        return client

    def log_text(self) -> str:
        """Everything the process has written to stdout and stderr so far."""
        return self.log_path.read_text()

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log events written so far."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    def logged(self, event: str, timeout: float = 5, **match: Any) -> list[dict[str, Any]]:
        """The log events named event whose fields equal match, waiting up to timeout seconds for one."""
        if "deadline" in match:  # the keyword's former name: as a field to match it would silently never match
            raise TypeError("Server.logged() takes timeout=, not deadline=")

        def found() -> list[dict[str, Any]]:
            return [
                entry
                for entry in self.logs()
                if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items())
            ]

        return poll_until(found, timeout=timeout)

    def rss_bytes(self) -> int:
        """The process's resident memory."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(line.split()[1]) * 1024

    def open_sockets(self) -> int:
        """How many sockets the process holds (its listener and every accepted connection)."""
        descriptors = Path(f"/proc/{self.process.pid}/fd")
        return sum(1 for fd in descriptors.iterdir() if _readlink(fd).startswith("socket:"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait up to timeout seconds for it (then kill it); the exit code."""
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed since the listing
        return ""


_STARTED: list[subprocess.Popen[str]] = []
_RUNNING = re.compile(r"running on (https?)://([^ ]+):(\d+)")


def start_server(
    folder: Path,
    config: dict[str, Any] | None = None,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    prefix: str = "",
    timeout: float = 20,
) -> Server:
    """Start `python -m ascrm serve` in folder on an ephemeral loopback port; return once it listens.

    The environment is this process's without ASCRM_* variables, with TEST_PLATFORM_PASSWORD set to
    PASSWORD (what platform_config refers to) and env on top. A config without rules gets an empty
    rule set: every answer is "no action", as the protocol tests expect.
    """
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ascrm", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    if config is not None:
        if "rules" not in config:
            (folder / "no-rules.yaml").write_text("rules: []\n")
            config = {**config, "rules": "no-rules.yaml"}
        config_path = folder / "ascrm.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        command += ["--config", str(config_path)]
    log_path = folder / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    environment["TEST_PLATFORM_PASSWORD"] = PASSWORD
    environment.update(env or {})
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment, text=True, cwd=folder
        )
    _STARTED.append(process)

    def listening() -> re.Match[str] | None:
        if process.poll() is not None:
            raise RuntimeError(f"ascrm serve exited with {process.returncode}:\n{log_path.read_text()}")
        return _RUNNING.search(log_path.read_text())

    running = poll_until(listening, timeout=timeout)
    if running is None:
        process.kill()
        process.wait()
        raise RuntimeError(f"ascrm serve did not start in {timeout} s:\n{log_path.read_text()}")
    scheme, host, port = running.groups()
    return Server(process, f"{scheme}://{host}:{port}{prefix}", log_path)


def kill_leftovers() -> None:
    """Kill every server still running, even one whose test or fixture failed before stopping it."""
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


class ServerFactory:
    """Starts servers in fresh folders of one pytest scope; stops them all when the scope ends."""

    def __init__(self, folders: pytest.TempPathFactory) -> None:
        self._folders = folders
        self._started: list[Server] = []

    def __call__(
        self,
        config: dict[str, Any] | None = None,
        *,
        folder: Path | None = None,
        admin: tuple[str, str] | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        prefix: str = "",
    ) -> Server:
        """A running server (see start_server); admin adds that admin user (password in ${TEST_ADMIN_PASSWORD})."""
        environment = dict(env or {})
        if admin is not None:
            config = config if config is not None else platform_config()
            config = {
                **config,
                "auth": {**config["auth"], "admin": [{"user": admin[0], "password": "${TEST_ADMIN_PASSWORD}"}]},
            }
            environment["TEST_ADMIN_PASSWORD"] = admin[1]
        where = folder if folder is not None else self._folders.mktemp("ascrm")
        server = start_server(where, config, args=args, env=environment, prefix=prefix)
        self._started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server this factory started."""
        for server in self._started:
            server.stop()
        self._started.clear()
