"""The `ascrm` command as a user runs it: serve with defaults, refusals, bad config, hash-password."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ascrm.service.auth.basic import PasswordHash
from tests.support.server import PASSWORD, USER, ServerFactory, platform_config

ASCRM = [sys.executable, "-m", "ascrm"]


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASCRM, *args], input=stdin, capture_output=True, text=True, timeout=30, cwd=cwd, check=False
    )


def test_serve_without_config_generates_a_password_once(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(folder=tmp_path)
    try:
        found = re.search(r"user=(\S+) password=(\S+)", server.log_path.read_text())
        assert found, server.log_path.read_text()
        user, password = found.groups()
        assert user == "autosecretary"
        assert len(password) >= 20
        assert server.base_url.startswith("http://127.0.0.1:")
        with server.client(auth=(user, password)) as http:
            response = http.get("/CallEvent")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json; charset=UTF-8"
        with server.client(auth=(user, "guess")) as http:
            assert http.get("/CallEvent").status_code == 401
        assert server.log_path.read_text().count(password) == 1
    finally:
        server.stop()


def test_sigterm_stops_gracefully(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(platform_config(), folder=tmp_path)
    with server.client() as http:
        assert http.get("/CallEvent").status_code == 200
    # uvicorn finishes the requests under way, runs the lifespan's shutdown, then re-raises the signal
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    events = [e.get("event") for e in server.logs()]
    assert events.index("service_stopped") > events.index("service_started")
    assert any(str(e).startswith("Finished server process") for e in events)


def test_credentials_from_the_environment_without_a_config(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(folder=tmp_path, env={"ASCRM_PLATFORM_USER": "pbx", "ASCRM_PLATFORM_PASSWORD": "from-env"})
    try:
        assert "password=" not in server.log_path.read_text()
        with server.client(auth=("pbx", "from-env")) as http:
            assert http.get("/CallEvent").status_code == 200
    finally:
        server.stop()


def test_refuses_a_public_address_without_credentials(tmp_path: Path) -> None:
    result = run("serve", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without credentials" in result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("listen: {port: http}\n", "listen.port: must be of integer type (got 'http')"),
        ("listen: {port: 70000}\n", "listen.port: max value is 65535 (got 70000)"),
        ("lisen: {port: 1}\n", "lisen: unknown key"),
        ("timezone: Moscow/Europe\n", "timezone: unknown time zone"),
        ("limits: {max_body_bytes: 0}\n", "limits.max_body_bytes: min value is 1 (got 0)"),
        ("log: {format: xml}\n", "log.format: unallowed value xml"),
        ("auth: {platform: [{user: a}]}\n", "auth.platform[0].password: needs password or password_hash"),
        ("auth: {admin: [{user: a, password: '${ASCRM_TEST_UNSET}'}]}\n", "ASCRM_TEST_UNSET is not set"),
        ("auth: {platform: [{user: 'a:b', password: x}]}\n", "auth.platform[0].user: has a bad format"),
        (
            "auth: {platform: [{user: a, password_hash: 'md5$x'}]}\n",
            "auth.platform[0].password_hash: expected",
        ),
        ("root_path: 'no-slash'\n", "root_path: has a bad format (got 'no-slash')"),
        ("tls: {certfile: a.pem}\n", "tls.keyfile: is required"),
        ("protocol: {noop: {event_type: zero}}\n", "protocol.noop.event_type: must be of integer type"),
        ("listen: [1, 2\n", "not valid YAML"),
        ("- a list\n", "the top level must be a mapping"),
    ],
)
def test_bad_config_is_refused_with_key_and_value(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    result = run("serve", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"ascrm: error: {path}: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_from_ascrm_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: {port: x}\n")
    result = subprocess.run(
        [*ASCRM, "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"ASCRM_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert "listen.port" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr


def test_hash_password_output_is_accepted_by_serve(tmp_path: Path, serve: ServerFactory) -> None:
    result = run("hash-password", "--stdin", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert PasswordHash.parse(encoded).matches(b"correct horse")
    config = platform_config()
    config["auth"]["platform"].append({"user": "next", "password_hash": encoded})
    server = serve(config, folder=tmp_path)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            assert http.get("/CallEvent", auth=("next", "correct horse")).status_code == 200
            assert http.get("/CallEvent", auth=(USER, PASSWORD)).status_code == 200  # both valid: rotation
            assert http.get("/CallEvent", auth=("next", "wrong horse")).status_code == 401
            assert http.get("/CallEvent", auth=("next", PASSWORD)).status_code == 401
    finally:
        server.stop()


def test_hash_password_rejects_empty() -> None:
    result = run("hash-password", "--stdin", stdin="\n")
    assert result.returncode == 1
    assert "empty" in result.stderr


def test_flags_override_the_config(tmp_path: Path, serve: ServerFactory) -> None:
    config = platform_config(listen={"host": "127.0.0.1", "port": 1})  # port 1 would fail to bind
    server = serve(config, folder=tmp_path)  # passes --port 0
    try:
        assert not server.base_url.endswith(":1")
    finally:
        server.stop()


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ascrm ")


def test_serve_refuses_rules_with_errors_and_prints_them(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text("rules:\n  - id: a\n    on: CallAccepted\n    do: {TransferEXT: '12'}\n")
    result = run("serve", "--port", "0", "--rules", str(rules), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{rules}:4:" in result.stderr
    assert "TransferEXT param '12' must be a 4-digit short number" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_rules_setting_uses_the_shipped_examples(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(folder=tmp_path, env={"ASCRM_PLATFORM_PASSWORD": PASSWORD})  # no ./rules in tmp_path
    try:
        [started] = server.logged("service_started")
        assert started["rule_count"] >= 10
        body = {"CallID": 77, "EventType": 4, "DTMF": "1", "AN": "79990001122", "UN": "74951234567"}
        with server.client() as http:
            assert http.post("/CallEvent", json=body).json() == {"CallID": 77, "EventType": 1, "Param": "74951112233"}
    finally:
        server.stop()


def test_a_port_in_use_is_one_error_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path)  # no credentials: no password
    assert result.returncode == 4
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]  # the rules' warnings
    assert errors == [
        f"ascrm: error: cannot listen on 127.0.0.1:{port}: address already in use"
        " (another process listens there; stop it or set listen.port / --port)"
    ]
    assert result.stdout == ""  # no password printed, no service_started logged
