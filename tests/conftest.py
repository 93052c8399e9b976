"""Fixtures that start the real `ascrm serve` process and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

PASSWORD = "s3cret-pässword"
USER = "autosecretary"


@dataclass
class Server:
    """A running `ascrm serve` process."""

    process: subprocess.Popen[str]
    base_url: str
    log_path: Path
    auth: tuple[str, str] = (USER, PASSWORD)
    verify: Any = True
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for base_url with the platform's credentials unless told otherwise."""
        kwargs.setdefault("auth", self.auth)
        kwargs.setdefault("verify", self.verify)
        kwargs.setdefault("base_url", self.base_url)
        kwargs.setdefault("timeout", 10)
        client = httpx.Client(**kwargs)
        self._clients.append(client)
        return client

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log events written so far."""
        events = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def logged(self, event: str, deadline: float = 5, **match: Any) -> list[dict[str, Any]]:
        """The log events named event whose fields equal match, waiting until there is one."""

        def found() -> list[dict[str, Any]]:
            return [
                entry
                for entry in self.logs()
                if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items())
            ]

        return wait_for(found, deadline=deadline) or []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait for it; the exit code."""
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


_STARTED: list[subprocess.Popen[str]] = []


def pytest_sessionfinish() -> None:
    """Never leave a server behind, even when a test or fixture failed before stopping it."""
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


_RUNNING = re.compile(r"running on (https?)://([^ ]+):(\d+)")


def start_server(
    tmp: Path,
    config: dict[str, Any] | None = None,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    prefix: str = "",
    deadline: float = 20,
) -> Server:
    """Start `python -m ascrm serve` on an ephemeral loopback port and wait until it listens."""
    tmp.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ascrm", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    if config is not None:
        if "rules" not in config:  # no rules: every answer is "no action", as the protocol tests expect
            (tmp / "no-rules.yaml").write_text("rules: []\n")
            config = {**config, "rules": "no-rules.yaml"}
        config_path = tmp / "ascrm.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        command += ["--config", str(config_path)]
    log_path = tmp / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    environment.update(env or {})
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment, text=True, cwd=tmp
        )
    _STARTED.append(process)
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        match = _RUNNING.search(log_path.read_text())
        if match:
            scheme, host, port = match.groups()
            return Server(process, f"{scheme}://{host}:{port}{prefix}", log_path)
        if process.poll() is not None:
            raise RuntimeError(f"ascrm serve exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"ascrm serve did not start in {deadline} s:\n{log_path.read_text()}")


# Action codes (the protocol's action table), written out so the tests do not borrow them from src.
ACTION_CODES = {
    "TransferDN": 1,
    "TransferEXT": 2,
    "PlayPrompt": 3,
    "Hangup": 4,
    "TransferPBX": 5,
    "PlayMenuBlock": 6,
    "PlayPromptAndBack": 7,
    "PlayPromptToOperator": 8,
    "TransferDNRec": 9,
    "TransferPBXRec": 10,
    "IgnorePromptToOperator": 11,
    "BackFromConsultCall": 12,
}


def start_with_admin(tmp: Path, admin: tuple[str, str], state: dict[str, Any]) -> Server:
    """Start a server with the platform's test credentials, the admin credentials admin and these state settings."""
    auth = {
        "platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}],
        "admin": [{"user": admin[0], "password": "${TEST_ADMIN_PASSWORD}"}],
    }
    env = {"TEST_PLATFORM_PASSWORD": PASSWORD, "TEST_ADMIN_PASSWORD": admin[1]}
    return start_server(tmp, platform_config(auth=auth, state=state), env=env)


def platform_config(**extra: Any) -> dict[str, Any]:
    """A config with the test credentials for the platform role, plus extra keys."""
    config: dict[str, Any] = {
        "auth": {"platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}]},
        "log": {"format": "json"},
    }
    config.update(extra)
    return config


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ascrm server for the session, served under the prefix /autosecretary."""
    config = platform_config(root_path="/autosecretary")
    config["auth"]["limits"] = {"per_client": 100_000}  # the tests send many wrong credentials from one address
    running = start_server(
        tmp_path_factory.mktemp("server"),
        config,
        env={"TEST_PLATFORM_PASSWORD": PASSWORD},
        prefix="/autosecretary",
    )
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """A client of the session's server with the platform's credentials."""
    with server.client() as http:
        yield http


def wait_for(predicate: Any, *, deadline: float = 5, interval: float = 0.05) -> Any:
    """Poll predicate until it returns a truthy value or the deadline passes."""
    stop_at = time.monotonic() + deadline
    while True:
        value = predicate()
        if value or time.monotonic() > stop_at:
            return value
        time.sleep(interval)
