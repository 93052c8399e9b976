"""Running a long CPU-bound job (a rule load) in a worker thread without starving the event loop.

The job shares one GIL with the loop. Two things let it hold the GIL for long stretches: the
interpreter's switch interval (5 ms by default: each time the loop waits for I/O and wakes up, it may
wait that long to get the GIL back, several times per request), and the cyclic garbage collector, whose
full collections over a load's many fresh objects run for 100-200 ms at a time. While a job runs, the
switch interval is lowered and only the young generations are collected (a few ms each; they free the
cycles a load leaves behind as it goes); the thresholds are restored when the job ends (in the server,
full collections run on a timer anyway: ascrm.service.collector). Pausing the
collector altogether is worse: the cycles pile up, and the first collection after the job frees a
million objects at once.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL = 0.0005  # seconds; the default is 0.005
NO_FULL_COLLECTION = 1_000_000  # young collections between two full ones: none while a job runs


@contextmanager
def sharing_the_gil(switch_interval: float = SWITCH_INTERVAL) -> Iterator[None]:
    """Within: a short switch interval and no full collections; both restored on exit."""
    previous = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    sys.setswitchinterval(min(previous, switch_interval))
    gc.set_threshold(thresholds[0], thresholds[1], NO_FULL_COLLECTION)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(previous)
