"""The latency figures `ascrm emulate` prints (tools/platform/tally.py), against hand-computed tables."""

from __future__ import annotations

import pytest

from ascrm.tools.platform.tally import Latency, nearest_rank

TEN = [float(n) for n in range(1, 11)]  # 1.0 … 10.0
HUNDRED = [float(n) for n in range(1, 101)]  # 1.0 … 100.0


@pytest.mark.parametrize(
    ("ordered", "percent", "expected"),
    [
        # nearest rank: the ceil(percent × n / 100)-th value, counting from 1
        (TEN, 50, 5.0),
        (TEN, 90, 9.0),
        (TEN, 99, 10.0),
        (TEN, 10, 1.0),
        (TEN, 11, 2.0),
        (TEN, 100, 10.0),
        (HUNDRED, 50, 50.0),
        (HUNDRED, 90, 90.0),
        (HUNDRED, 99, 99.0),
        (HUNDRED, 99.5, 100.0),
        ([7.0], 50, 7.0),
        ([7.0], 99, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0], 51, 2.0),
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([1.0, 2.0, 3.0], 0, 1.0),
    ],
)
def test_nearest_rank(ordered: list[float], percent: float, expected: float) -> None:
    assert nearest_rank(ordered, percent) == expected


def test_latency_figures_are_the_nearest_ranks_in_milliseconds() -> None:
    seconds = [n / 1000 for n in range(200, 0, -1)]  # 200 ms … 1 ms, not in order
    assert Latency.of(seconds) == Latency(count=200, p50=100.0, p90=180.0, p99=198.0, max=200.0)


def test_a_skewed_run_keeps_its_tail() -> None:
    seconds = [0.002] * 95 + [0.5] * 5  # 5 % of the answers are slow
    assert Latency.of(seconds) == Latency(count=100, p50=2.0, p90=2.0, p99=500.0, max=500.0)


def test_no_requests_no_figures() -> None:
    assert Latency.of([]) == Latency(0, 0.0, 0.0, 0.0, 0.0)
