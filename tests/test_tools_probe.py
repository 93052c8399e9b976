"""`ascrm probe` run as a user runs it: against `ascrm serve` (HTTP and HTTPS) and endpoints broken on purpose."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.broken_crm import serving
from tests.support.net import free_port
from tests.support.server import PASSWORD, Server, ServerFactory, platform_config
from tests.support.tls import write_server_certificate
from tests.support.tools import EXAMPLE_RULES as RULES
from tests.support.tools import QUICK_CALL, run_tool


@pytest.fixture(scope="module")
def ascrm(serve_module: ServerFactory) -> Server:
    """ascrm serving the example rules under /autosecretary."""
    config = platform_config(root_path="/autosecretary", rules=str(RULES))
    return serve_module(config, prefix="/autosecretary")


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    with serving() as base:
        yield base


def test_probe_passes_against_ascrm_with_a_whole_call(ascrm: Server) -> None:
    done = run_tool("probe", ascrm.base_url, *QUICK_CALL)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"probe: passed: {len(lines) - 2} requests, 0 error(s), 0 warning(s)"
    assert all(line.startswith("ok ") for line in lines[1:-1]), done.stdout
    assert "GET /CallEvent without credentials: 401" in done.stdout
    assert [line for line in lines if "POST /CallEvent DTMF" in line and "TransferDN 74951112233" in line]
    assert sum("(poll " in line for line in lines) == 2
    assert ascrm.logged("connection_test", method="POST", un="74951234567")
    assert ascrm.logged("poll_answered")


def test_probe_json_report(ascrm: Server) -> None:
    done = run_tool("probe", ascrm.base_url, "--json", "--un", "74990001122")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["passed"], report["errors"]) == (True, 0)
    assert [check["status"] for check in report["checks"]] == [200, 200, 401]
    assert report["checks"][1]["request"] == "POST /CallEvent/0 (connection test, UN 74990001122)"


def test_wrong_password_exits_4(ascrm: Server) -> None:
    done = run_tool("probe", ascrm.base_url, password="not-it")
    assert done.returncode == 4
    assert "refused the credentials of user 'autosecretary'" in done.stderr


def test_password_from_a_named_variable(ascrm: Server) -> None:
    env_name = "CRM_SECRET_FOR_PROBE"
    os.environ[env_name] = PASSWORD
    try:
        done = run_tool("probe", ascrm.base_url, "--password-env", env_name, password=None)
    finally:
        del os.environ[env_name]
    assert done.returncode == 0, done.stdout + done.stderr


def test_unset_password_variable_is_a_usage_error(ascrm: Server) -> None:
    done = run_tool("probe", ascrm.base_url, "--password-env", "NO_SUCH_VARIABLE_HERE")
    assert done.returncode == 2
    assert "ascrm: error: --password-env NO_SUCH_VARIABLE_HERE: the environment variable" in done.stderr


def test_unreachable_endpoint_exits_3() -> None:
    port = free_port()
    done = run_tool("probe", f"http://127.0.0.1:{port}/crm")
    assert done.returncode == 3
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("url", ["ftp://example.com/x", "crm.example.com", "http://127.0.0.1:1/x?y=1"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    done = run_tool("probe", url)
    assert done.returncode == 2
    assert f"ascrm: error: URL {url!r}" in done.stderr


@pytest.fixture(scope="module")
def tls_ascrm(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, serve_module: ServerFactory
) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("probe-tls")
    tls = write_server_certificate(ca, folder)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    config = platform_config(tls=tls)
    server = serve_module(config, folder=folder)
    yield server, folder / "ca.pem"
    server.stop()


def test_tls_certificate_not_trusted_exits_3(tls_ascrm: tuple[Server, Path]) -> None:
    server, _ = tls_ascrm
    done = run_tool("probe", server.base_url)
    assert done.returncode == 3
    assert "TLS with 127.0.0.1:" in done.stderr
    assert "certificate verify failed" in done.stderr
    assert "--cacert FILE" in done.stderr


@pytest.mark.parametrize("trust", ["--cacert", "--insecure"])
def test_tls_with_cacert_or_insecure_passes(tls_ascrm: tuple[Server, Path], trust: str) -> None:
    server, ca_file = tls_ascrm
    args = (trust, str(ca_file)) if trust == "--cacert" else (trust,)
    done = run_tool("probe", server.base_url, *args, *QUICK_CALL)  # ascrm's native TLS, a whole call
    assert done.returncode == 0, done.stdout + done.stderr
    assert sum("(poll " in line for line in done.stdout.splitlines()) == 2


def test_unreadable_cacert_is_a_usage_error(tls_ascrm: tuple[Server, Path], tmp_path: Path) -> None:
    server, _ = tls_ascrm
    done = run_tool("probe", server.base_url, "--cacert", str(tmp_path / "absent.pem"))
    assert done.returncode == 2
    assert f"--cacert {tmp_path / 'absent.pem'}: cannot use it as CA certificates" in done.stderr


DEVIATIONS = [
    # (endpoint, extra args, exit status, text in the report)
    ("good", (), 0, "probe: passed"),
    ("plain-json", (), 1, "Content-Type 'application/json' lacks the charset"),
    ("lower-charset", (), 1, "Content-Type 'application/json; charset=utf-8' is not exactly"),
    ("text-plain", (), 1, "Content-Type 'text/plain; charset=UTF-8' is not JSON"),
    ("not-json", (), 1, "the body is not JSON"),
    ("case-fields", QUICK_CALL, 1, "field 'callId' must be spelt 'CallID'"),
    ("missing-param", QUICK_CALL, 1, "field 'Param' is missing"),
    ("string-call-id", QUICK_CALL, 1, "CallID must be a JSON integer (int64), got string"),
    ("wrong-call-id", QUICK_CALL, 1, "does not echo the request's CallID"),
    ("float-event-type", QUICK_CALL, 1, "EventType must be an integer action code, got number 0.0"),
    ("unknown-action", QUICK_CALL, 1, "EventType 13 is not an action code"),
    ("bad-param", QUICK_CALL, 1, "Param '12345' for TransferEXT: must be a 4-digit short number"),
    ("error-500", QUICK_CALL, 1, "status 500, expected 200"),
    ("slow-poll", (*QUICK_CALL, "--timeout", "0.3"), 1, "no answer within 0.3 s (--timeout)"),
    ("extra-field", QUICK_CALL, 0, "warning: field(s) 'Comment' are not in ReturnCRMData"),
    ("extra-field", (*QUICK_CALL, "--strict"), 1, "probe: FAILED"),
    ("open", (), 0, "status 200 without credentials"),
    ("no-challenge", (), 4, "401 without a 'WWW-Authenticate: Basic realm=…' challenge (got none)"),
]


@pytest.mark.parametrize(("endpoint", "args", "status", "text"), DEVIATIONS, ids=[d[0] for d in DEVIATIONS])
def test_probe_reports_each_deviation(
    broken: str, endpoint: str, args: tuple[str, ...], status: int, text: str
) -> None:
    done = run_tool("probe", f"{broken}/{endpoint}", *args)
    assert done.returncode == status, done.stdout + done.stderr
    assert text in done.stdout
    assert "Traceback" not in done.stderr


def test_a_call_stops_where_the_platform_would(broken: str) -> None:
    done = run_tool("probe", f"{broken}/error-500", *QUICK_CALL)
    calls = [line for line in done.stdout.splitlines() if "(call " in line]
    assert len(calls) == 1  # a POST answered 500: the platform sends nothing more for this call
    assert calls[0].startswith("FAIL  POST /CallEvent CallAccepted")
