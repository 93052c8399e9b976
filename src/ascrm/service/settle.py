"""Waiting until a set of files has stayed unchanged for a while: a save in several writes is complete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

Mark = tuple[int, int, int, int] | None  # size, mtime_ns, ctime_ns, inode; None: missing


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of some files and of their folders, and when the newest of them last changed."""

    marks: tuple[tuple[str, Mark], ...]
    changed_at: float  # seconds since the epoch: the newest status change (ctime) among them

    @property
    def quiet_for(self) -> float:
        """Seconds since the newest change (negative for a clock behind the files')."""
        return time.time() - self.changed_at


def snapshot(files: list[Path]) -> Snapshot:
    """The files' and their folders' size, times and inode. A write, a rename over a file or into a
    folder, a deletion all change a ctime, which no one can set back."""
    marks: list[tuple[str, Mark]] = []
    newest = 0
    for path in [*files, *sorted({path.parent for path in files})]:
        try:
            stat = path.stat()
        except OSError:
            marks.append((str(path), None))
            continue
        marks.append((str(path), (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)))
        newest = max(newest, stat.st_ctime_ns)
    return Snapshot(tuple(marks), newest / 1e9)


async def settle(files: Callable[[], list[Path]], quiet: float) -> Snapshot:
    """Wait until the files have stayed unchanged for quiet seconds: since their newest change, and as
    seen at both ends of the wait. Their snapshot then."""
    seen = await anyio.to_thread.run_sync(lambda: snapshot(files()))
    while True:
        wait = min(quiet, quiet - seen.quiet_for)  # never longer than quiet: a clock ahead of ours
        if wait > 0:
            await asyncio.sleep(wait)
        now = await anyio.to_thread.run_sync(lambda: snapshot(files()))
        if now == seen:
            return now
        seen = now
