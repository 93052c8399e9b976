"""The service's counters (service/stats.py): each latency observation lands in the bucket of its time."""

from __future__ import annotations

import pytest

from ascrm.service.stats import LATENCY_BUCKETS, Histogram


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [
        (0.0, 0.0005),
        (0.0004, 0.0005),
        (0.0005, 0.0005),  # a bound is in its own bucket: Prometheus's le is "at most"
        (0.00051, 0.001),
        (0.003, 0.005),
        (0.01, 0.01),
        (0.2, 0.25),
        (0.26, 0.5),
        (1.0, 1.0),
        (4.9, 5.0),
        (5.0, 5.0),
        (5.1, float("inf")),
        (60.0, float("inf")),
    ],
)
def test_an_observation_lands_in_the_smallest_bucket_that_holds_it(seconds: float, bucket: float) -> None:
    histogram = Histogram()
    histogram.observe(seconds)
    bounds = (*LATENCY_BUCKETS, float("inf"))
    assert [bound for bound, n in zip(bounds, histogram.counts, strict=True) if n] == [bucket]
    assert (histogram.count, histogram.total) == (1, seconds)


def test_observations_add_up() -> None:
    histogram = Histogram()
    for seconds in (0.0002, 0.0002, 0.03, 7.0):
        histogram.observe(seconds)
    assert histogram.counts[0] == 2
    assert histogram.counts[LATENCY_BUCKETS.index(0.05)] == 1
    assert histogram.counts[-1] == 1
    assert histogram.count == 4
    assert histogram.total == pytest.approx(7.0304)
