"""Waiting for something to happen by polling against a deadline, never by a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], *, timeout: float = 5, interval: float = 0.05) -> T:
    """The first truthy value of predicate, or its last (falsy) one once timeout seconds have passed."""
    stop_at = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= stop_at:
            return value
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], what: str, *, timeout: float = 5, interval: float = 0.05) -> T:
    """The first truthy value of predicate; the test fails, naming what it waited for, after timeout seconds."""
    value = poll_until(predicate, timeout=timeout, interval=interval)
    if not value:
        pytest.fail(f"waited {timeout} s for {what}; the last check gave {value!r}")
    return value
