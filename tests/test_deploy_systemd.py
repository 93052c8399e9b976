"""The shipped systemd unit passes `systemd-analyze verify` and scores as hardened in `systemd-analyze security`.

The unit's ExecStart names /opt/ascrm/bin/ascrm, which does not exist here; verify checks that it is
executable, so a copy is verified with that one path replaced by this Python running `-m ascrm`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.needs import needs

UNIT = Path(__file__).parent.parent / "deploy" / "systemd" / "ascrm.service"
INSTALLED = "/opt/ascrm/bin/ascrm serve"

needs_analyze = needs(shutil.which("systemd-analyze"), "systemd-analyze is not installed (Debian: systemd)")


def analyze(tmp_path: Path, text: str, *command: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze COMMAND on a copy of the unit with text as its content."""
    unit = tmp_path / "ascrm.service"
    unit.write_text(text)
    return subprocess.run(
        ["systemd-analyze", *command, str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def runnable(text: str) -> str:
    assert text.count(INSTALLED) == 1
    return text.replace(INSTALLED, f"{sys.executable} -m ascrm serve")


@needs_analyze
def test_unit_verifies_without_a_word(tmp_path: Path) -> None:
    result = analyze(tmp_path, runnable(UNIT.read_text()), "verify")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict", "Unknown key 'ProtectSytem'"),
        ("KillSignal=SIGTERM", "KillSignal=SIGTERN", "Failed to parse signal name"),
        (f"{sys.executable} -m ascrm", "/nonexistent/ascrm", "is not executable"),
    ],
)
def test_a_broken_unit_is_caught(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    result = analyze(tmp_path, runnable(UNIT.read_text()).replace(old, new), "verify")
    assert complaint in result.stdout + result.stderr


def exposure(tmp_path: Path, text: str) -> float:
    result = analyze(tmp_path, text, "security", "--offline=true", "--no-pager")
    match = re.search(r"Overall exposure level for ascrm.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
def test_unit_is_hardened(tmp_path: Path) -> None:
    text = runnable(UNIT.read_text())
    assert exposure(tmp_path, text) <= 2.0  # systemd rates 0-10; <= 2.0 is "OK"
    service, _, rest = text.partition("# Hardening")
    unhardened = service + rest[rest.index("[Install]") :]
    assert exposure(tmp_path, unhardened) > 5.0  # the measure itself can tell


def test_unit_has_what_operations_rely_on() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the rules
    assert settings["KillSignal"] == "SIGTERM"
    assert int(settings["TimeoutStopSec"]) > 10  # ascrm lets requests under way finish for up to 10 s
    assert settings["User"] == "ascrm"
    assert settings["EnvironmentFile"] == "/etc/ascrm/ascrm.env"
    assert settings["CapabilityBoundingSet"] == ""
