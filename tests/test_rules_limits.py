"""Rule loading is bounded: no rule, list or map file can stall the service or fill its memory or logs.

Each hostile file is refused quickly, with one short message naming the file, the line and the limit;
`ascrm check` says so on stderr, a hot reload in its 422 answer, GET /admin/rules and the log. Error
messages quote at most a short excerpt of a value, and nothing of a file that is not a YAML mapping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.server import Server, ServerFactory, platform_config

ADMIN = ("ops", "limits-pw")
GOOD = "rules:\n  - id: hello\n    on: CallAccepted\n    do: {PlayPrompt: hello_v1}\n"
MB = 1024 * 1024


def alias_bomb(levels: int = 9) -> str:
    """`levels` levels of nine aliases each naming the level below: 9**levels strings once expanded."""
    lines = ["maps:", "  m0:", '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    a{n}: &a{n} [{','.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    lines += [f"  m1: {{k: *a{levels - 1}}}", "rules: []"]
    return "\n".join(lines) + "\n"


@dataclass
class Checked:
    """What one `ascrm check` run did."""

    code: int
    seconds: float
    peak_mb: float
    stderr: str


# `ascrm check` run by the command's own entry point, printing its process's peak RSS (KiB) at the end:
# VmHWM, which starts afresh at exec (ru_maxrss would carry over this large test process's).
_MEASURED_CHECK = """
import sys
from ascrm.cli import main
try:
    code = main(["check", *sys.argv[1:]])
except SystemExit as exc:
    code = exc.code
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(status.split()[0], flush=True)
sys.exit(code)
"""


def check(*args: str, deadline: float = 30) -> Checked:
    """Run `ascrm check` in its own process: exit code, wall time, its peak RSS and stderr."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", _MEASURED_CHECK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = process.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"ascrm check {' '.join(args)} still running after {deadline} s")
    seconds = time.monotonic() - started
    peak_kb = int(out.split()[-1])
    return Checked(process.returncode, seconds, peak_kb / 1024, err.decode(errors="replace"))


def test_an_alias_bomb_is_refused_at_once_naming_the_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(alias_bomb())
    assert rules.stat().st_size < 600
    result = check(str(rules))
    assert result.code == 1
    assert f"{rules}:8:" in result.stderr
    assert "limits.rules.nodes" in result.stderr
    assert "aliases counted each time they are used" in result.stderr
    assert len(result.stderr) < 1000, result.stderr[:2000]
    assert result.seconds < 10  # a generous bound: unbounded, it ran for minutes
    assert result.peak_mb < 256  # all children so far: an expanded bomb alone takes gigabytes


def test_anchors_reused_in_the_ordinary_way_still_load(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - id: vip\n    on: CallAccepted\n    if: &vip {AN: ['79160000001', '79160000002']}\n"
        "    do: {PlayPrompt: vip}\n"
        "  - id: vip_again\n    on: CallAnswered\n    if: *vip\n    do: {PlayPrompt: vip_again}\n"
    )
    result = check(str(rules))
    assert result.code == 0, result.stderr
    assert result.stderr == ""


def test_an_alias_inside_the_node_it_names_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("maps:\n  m: &loop {k: *loop}\nrules: []\n")
    result = check(str(rules))
    assert result.code == 1
    assert f"{rules}:2:" in result.stderr
    assert "alias *loop is inside the node it names" in result.stderr


def test_nesting_past_the_depth_limit_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("maps:\n  m: {k: " + "[" * 100 + "]" * 100 + "}\nrules: []\n")
    result = check(str(rules))
    assert result.code == 1
    assert f"{rules}:2:" in result.stderr
    assert "nested deeper than 64 levels (limits.rules.depth)" in result.stderr


def test_a_rule_file_past_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    with rules.open("w") as out:
        out.write(("# " + "x" * 1021 + "\n") * (9 * 1024))  # 9 MiB of comments
        out.write("rules: []\n")
    result = check(str(rules))
    assert result.code == 1
    assert f"more than {8 * MB} (limits.rules.file_bytes)" in result.stderr
    assert result.peak_mb < 256


def test_the_config_sets_the_limits_of_ascrm_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("# " + "x" * 5000 + "\n" + GOOD)
    config = tmp_path / "ascrm.yaml"
    config.write_text(yaml.safe_dump({"limits": {"rules": {"file_bytes": 4096}}}))
    assert check(str(rules)).code == 0
    result = check(str(rules), "--config", str(config))
    assert result.code == 1
    assert "more than 4096 (limits.rules.file_bytes)" in result.stderr


def test_a_document_with_too_many_nodes_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("maps:\n  m: {" + ", ".join(f"{n}: x" for n in range(200_000)) + "}\nrules: []\n")
    config = tmp_path / "ascrm.yaml"
    config.write_text(yaml.safe_dump({"limits": {"rules": {"nodes": 100_000}}}))
    result = check(str(rules), "--config", str(config))
    assert result.code == 1
    assert f"{rules}:2:" in result.stderr
    assert "more than 100000 YAML nodes (limits.rules.nodes)" in result.stderr


def test_error_messages_quote_only_a_short_excerpt(tmp_path: Path) -> None:
    big = 100_000
    shape = tmp_path / "shape.yaml"  # cerberus's messages
    shape.write_text(
        f"normalize: {'N' * big}\n"  # `allowed`
        f"{'K' * 1000}: 1\n"  # an unknown key (YAML keys are at most 1024 characters)
        "rules:\n"
        f"  - id: 9{'I' * big}\n    on: CallAccepted\n    do: Hangup\n"  # `regex`
    )
    zone = tmp_path / "zone.yaml"  # our own messages: a setting (also a name too long for a path)…
    zone.write_text(f"timezone: {'Z' * big}\nrules: []\n")
    rules_file = tmp_path / "rules.yaml"  # … and rules
    rules_file.write_text(
        "rules:\n"
        f"  - id: x\n    on: {'E' * big}\n    do: Hangup\n"
        f"  - id: y\n    on: CallAccepted\n    do: {{{'D' * 1000}: {'P' * big}}}\n"
    )
    for rules, errors in ((shape, 3), (zone, 1), (rules_file, 2)):
        result = check(str(rules))
        assert result.code == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == errors + 1, result.stderr[:3000]
        assert max(len(line) for line in lines) < 400, result.stderr[:3000]
        assert "…" in result.stderr  # an excerpt is still quoted


def test_a_list_file_past_the_line_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text("".join(f"7916{n:07d}\n" for n in range(2001)))
    rules = tmp_path / "rules.yaml"
    rules.write_text("lists:\n  blocked: {file: blocked.txt}\n" + GOOD)
    config = tmp_path / "ascrm.yaml"
    config.write_text(yaml.safe_dump({"limits": {"rules": {"data_file_lines": 2000}}}))
    result = check(str(rules), "--config", str(config))
    assert result.code == 1
    assert "the file has 2001 lines, more than 2000 (limits.rules.data_file_lines)" in result.stderr


@pytest.fixture
def server(tmp_path: Path, serve: ServerFactory) -> Server:
    """A server reloading only when told, with an admin user."""
    (tmp_path / "rules.yaml").write_text(GOOD)
    config = platform_config(rules=str(tmp_path / "rules.yaml"), reload={"watch": False})
    config["auth"]["admin"] = [{"user": ADMIN[0], "password": "${TEST_ADMIN_PASSWORD}"}]
    return serve(config, folder=tmp_path, env={"TEST_ADMIN_PASSWORD": ADMIN[1]})


def prompt(server: Server, call_id: int) -> str:
    with server.client() as http:
        return str(http.post("/CallEvent", json={"CallID": call_id, "EventType": 1}).json()["Param"])


def test_a_hot_reload_of_an_alias_bomb_is_refused_at_once(server: Server, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(alias_bomb(levels=8))
    with server.client(auth=ADMIN, timeout=30) as admin:
        started = time.monotonic()
        answer = admin.post("/admin/reload")
        took = time.monotonic() - started
        described = admin.get("/admin/rules")
    assert answer.status_code == 422
    assert took < 5  # generous: unbounded, this reload ran for 15 s and took 1.2 GB
    problems = answer.json()["problems"]
    assert len(problems) == 1
    assert problems[0].startswith(f"{rules}:8:")
    assert "limits.rules.nodes" in problems[0]
    assert len(answer.content) < 2000
    assert len(described.content) < 4000
    assert prompt(server, 1) == "hello_v1"  # the live set keeps serving
    rejected = [line for line in server.log_path.read_text().splitlines() if "rules_reload_rejected" in line]
    assert len(rejected) == 1
    assert len(rejected[0]) < 2000


def test_a_rules_path_symlinked_to_a_system_file_quotes_none_of_it(server: Server, tmp_path: Path) -> None:
    system_file = Path("/etc/passwd")
    rules = tmp_path / "rules.yaml"
    rules.unlink()
    rules.symlink_to(system_file)
    with server.client(auth=ADMIN) as admin:
        answer = admin.post("/admin/reload")
    assert answer.status_code == 422
    [problem] = answer.json()["problems"]
    assert problem.startswith(f"{rules}:1:1: error: a rule file is a mapping")
    assert problem.endswith("this file is one text")
    _assert_quotes_nothing_of(system_file, answer.text, server.log_path.read_text())


def test_a_list_file_that_is_no_list_quotes_none_of_it(server: Server, tmp_path: Path) -> None:
    secrets = tmp_path / "service.conf"  # named as a list file by mistake (or a symlink to it)
    secrets.write_text("# service settings\nuser=ascrm\ndb_password=hunter2*wonderful\n")
    (tmp_path / "blocked.txt").symlink_to(secrets)
    (tmp_path / "rules.yaml").write_text("lists:\n  blocked: {file: blocked.txt}\n" + GOOD)
    with server.client(auth=ADMIN) as admin:
        answer = admin.post("/admin/reload")
        described = admin.get("/admin/rules").text
    assert answer.status_code == 422
    [problem] = answer.json()["problems"]
    expected = "(text of 29 characters) has '*' inside: only a trailing '*' is a prefix"
    assert problem == f"{tmp_path / 'blocked.txt'}:3:1: error: {expected}"
    for text in (answer.text, described, server.log_path.read_text()):
        assert "hunter2" not in text


def _assert_quotes_nothing_of(system_file: Path, *texts: str) -> None:
    """No piece of a line of system_file (its fields: user names, paths) shows in any of texts."""
    shown = "\n".join(texts)
    for line in system_file.read_text().splitlines():
        for piece in line.split(":"):
            if len(piece) >= 6 and piece not in os.fspath(system_file):
                assert piece not in shown, f"{piece!r} of {system_file} is quoted"


def test_a_file_with_thousands_of_mistakes_reports_the_first_hundred(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n" + "".join(f"  - id: r{n}\n    on: CallAccepted\n" for n in range(5000)))  # no `do`
    result = check(str(rules))
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 102, lines[-3:]
    assert lines[-2] == f"{rules}:202:5: error: … more problems, not shown"
    assert result.seconds < 10  # a generous bound: cerberus's list schema took minutes
