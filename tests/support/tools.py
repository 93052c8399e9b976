"""Running the rule tools (`ascrm probe`, `ascrm emulate`) as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import PASSWORD

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "rules"
QUICK_CALL = ("--call", "--poll-interval", "0.05", "--polls", "2")  # probe: a whole call, quickly


def run_tool(*args: str, password: str | None = PASSWORD, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m ascrm ARGS` with the password in ASCRM_PROBE_PASSWORD (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCRM_")}
    if password is not None:
        env["ASCRM_PROBE_PASSWORD"] = password
    command = [sys.executable, "-m", "ascrm", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
