"""Tests that need a tool from outside the project (redis-server, nginx, systemd-analyze, hadolint): skipped
where the tool is missing, except in CI (CI=true), where a missing tool is an error: CI installs them all, so
a failed install must not turn into a quietly smaller suite. A pytest plugin (tests/conftest.py loads it;
other support modules import it first, hence PYTEST_DONT_REWRITE: it has no asserts to rewrite)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Stop a test whose tool is not installed: a skip, or in CI a failure."""
    if IN_CI:
        pytest.fail(f"{reason}; in CI every tool the tests need must be installed (.ci/run)", pytrace=False)
    pytest.skip(reason)


def needs(found: object, reason: str) -> pytest.MarkDecorator:
    """The mark of tests that need a tool; found is None when it is not installed (reason: how to install it)."""
    return pytest.mark.needs_tool(reason=None if found is not None else reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_tool(reason): the test needs a tool (reason: set when it is missing)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_tool"):
        reason = mark.kwargs.get("reason")
        if reason is not None:
            missing(reason)
