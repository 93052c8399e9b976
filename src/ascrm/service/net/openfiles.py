"""The open-file limit: raised to the hard limit at start, and what it leaves for connections."""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Descriptors kept for everything but client connections: listening sockets, logs, Redis, the rules watch.
RESERVED_FILES = 64
_UNLIMITED_TARGET = 1 << 20  # the kernel's default fs.nr_open: what "unlimited" can really be raised to


@dataclass(frozen=True, slots=True)
class OpenFilesLimit:
    """RLIMIT_NOFILE before and after raising the soft limit."""

    before: int
    soft: int
    hard: int  # -1: unlimited

    def connections(self, wanted: int) -> int:
        """How many connections fit: wanted, or fewer when the open-file limit is lower."""
        return max(1, min(wanted, self.soft - RESERVED_FILES))


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as far as the kernel allows); the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    raised = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            raised = target
        except (ValueError, OSError):
            raised = soft
    shown = _UNLIMITED_TARGET if raised == resource.RLIM_INFINITY else raised
    return OpenFilesLimit(before=soft, soft=shown, hard=-1 if hard == resource.RLIM_INFINITY else hard)
