"""Running a long CPU-bound job (a rule load) in a worker thread without starving the event loop.

The job shares one GIL with the loop. Two things let it hold the GIL for long stretches: the
interpreter's switch interval (5 ms by default: each time the loop waits for I/O and wakes up, it may
wait that long to get the GIL back, several times per request), and the cyclic garbage collector, whose
full collections over a load's many fresh objects run for 100-200 ms at a time. While a job runs, the
switch interval is lowered and the collector paused; its objects are freed by reference counting as
usual, and the collector resumes when the job ends.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL = 0.0005  # seconds; the default is 0.005


@contextmanager
def sharing_the_gil(switch_interval: float = SWITCH_INTERVAL) -> Iterator[None]:
    """Within: a short switch interval and no cyclic collections; both restored on exit."""
    previous = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(min(previous, switch_interval))
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        sys.setswitchinterval(previous)
