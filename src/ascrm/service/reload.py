"""Reloading the rules without a restart: built apart from the live set, swapped in whole, or not at all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog
import watchfiles

from ascrm.core.engine import RuleSet
from ascrm.core.rules import Location, Problem, RulesError, load_rules
from ascrm.core.rules.editable import EditableLists
from ascrm.core.rules.limits import RuleLimits
from ascrm.core.rules.load import rule_files
from ascrm.service.settle import Snapshot, settle, snapshot
from ascrm.service.sharing import sharing_the_gil
from ascrm.service.stats import ReloadStats

log = structlog.get_logger("ascrm.reload")


class ActiveRules:
    """The rule set being served: one reference, swapped whole by a reload; a request reads it once."""

    __slots__ = ("current",)

    def __init__(self, rules: RuleSet) -> None:
        self.current = rules


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What a reload did: `reloaded`, `unchanged` (same revision) or `rejected` (with the problems)."""

    status: str
    revision: str
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """The last rejected reload."""

    at: datetime
    trigger: str
    problems: tuple[Problem, ...]


class RuleReloader:
    """Loads the rules source off the event loop and swaps the result into `active.current` in one step.

    A set with any error is rejected whole and the last good set keeps serving. So is a set that
    suddenly has no rules while the live one has some (a deleted folder's leftovers), unless the reload
    is forced. A watched change is loaded only once the files have stayed unchanged for settle_seconds,
    whatever they hold: a file caught half-written is never served, even when the half parses.
    """

    def __init__(
        self,
        active: ActiveRules,
        source: Path,
        timezone: str,
        clock: Callable[[], datetime],
        *,
        stats: ReloadStats | None = None,
        settle_seconds: float = 1.0,
        limits: RuleLimits | None = None,
        editable: EditableLists | None = None,
    ) -> None:
        self._active = active
        self._stats = stats or ReloadStats()
        self.source = source
        self._timezone = timezone
        self._clock = clock
        self._lock = asyncio.Lock()
        self.loaded_at = clock()
        self.last_failure: Failure | None = None
        self.settle_seconds = settle_seconds
        self._limits = limits or RuleLimits()
        self._editable = editable  # the server's editable lists: a reload keeps what was edited
        self._settled: Snapshot | None = None  # the files as the last watched reload loaded them

    @property
    def rules(self) -> RuleSet:
        """The live rule set."""
        return self._active.current

    async def reload(self, *, trigger: str, force: bool = False) -> ReloadOutcome:
        """Load, check and compile the source; swap it in when it is good and new.

        A watched change first waits for the files to settle; SIGHUP and the admin endpoint load at once.
        """
        while True:
            settled = await self._settle() if trigger == "watch" else None
            if settled is not None and settled == self._settled:  # a save's trailing events: no new load
                outcome: ReloadOutcome | None = ReloadOutcome("unchanged", self.rules.revision)
            else:
                outcome = await self._reload(trigger, force, settled)
            if outcome is not None:
                break
        if settled is not None:
            self._settled = settled
        self._stats.count(outcome.status)
        return outcome

    def _files(self) -> list[Path]:
        """The rule files of the source and the list and map files of the live set."""
        try:
            files = rule_files(self.source)
        except RulesError:
            files = [self.source]
        return [*files, *self.rules.data_files]

    async def _settle(self) -> Snapshot:
        """Wait until the files have stayed unchanged for settle_seconds; their snapshot then."""
        log.info("rules_settling", source=str(self.source), seconds=self.settle_seconds)
        return await settle(self._files, self.settle_seconds)

    async def _load(self) -> RuleSet | tuple[Problem, ...]:
        """The source's rule set, built in a worker thread; its problems if it has any."""
        try:
            return await anyio.to_thread.run_sync(self._load_now)
        except RulesError as exc:
            return tuple(exc.problems)
        except Exception as exc:  # any failure to read leaves the live set serving
            return (Problem(Location(self.source), f"cannot load: {exc}"),)

    def _load_now(self) -> RuleSet:
        with sharing_the_gil():
            return load_rules(self.source, self._timezone, limits=self._limits, editable=self._editable)

    async def _reload(self, trigger: str, force: bool, settled: Snapshot | None) -> ReloadOutcome | None:
        """The outcome; None when the files changed again while they were loading (settle anew)."""
        async with self._lock:  # one reload at a time; requests go on with the live set meanwhile
            live = self.rules
            fresh = await self._load()
            if settled is not None:
                now = await anyio.to_thread.run_sync(lambda: snapshot(self._files()))
                if now != settled:
                    log.info("rules_changed_while_loading", source=str(self.source))
                    return None
            if isinstance(fresh, tuple):
                return self._reject(trigger, fresh)
            if fresh.revision == live.revision:
                return ReloadOutcome("unchanged", live.revision)
            if not force and not fresh.rules and live.rules:
                message = (
                    f"the new rule set has no rules (the live one has {len(live.rules)}): kept the live one;"
                    " reload with force to accept an empty set"
                )
                return self._reject(trigger, (Problem(Location(self.source), message),))
            self._active.current = fresh
            self.loaded_at = self._clock()
            previous = live.revision
            retired = [live]  # freed in a worker thread: a big set's millions of objects take a while
            del live
            log.info(
                "rules_reloaded",
                trigger=trigger,
                revision=fresh.revision,
                previous=previous,
                rule_count=len(fresh.rules),
                warnings=[str(warning) for warning in fresh.warnings],
            )
            await anyio.to_thread.run_sync(retired.clear)
            return ReloadOutcome("reloaded", fresh.revision)

    def _reject(self, trigger: str, problems: tuple[Problem, ...]) -> ReloadOutcome:
        self.last_failure = Failure(self._clock(), trigger, problems)
        log.error(
            "rules_reload_rejected",
            trigger=trigger,
            revision=self.rules.revision,
            problems=[str(problem) for problem in problems],
        )
        return ReloadOutcome("rejected", self.rules.revision, problems)

    def describe(self) -> dict[str, Any]:
        """The live set and the last rejected reload, as JSON-ready values (GET /admin/rules)."""
        rules = self.rules
        failure = self.last_failure
        return {
            "revision": rules.revision,
            "source": str(self.source),
            "files": [str(path) for path in rules.files],
            "data_files": [str(path) for path in rules.data_files],
            "rule_count": len(rules.rules),
            "loaded_at": self.loaded_at.isoformat(),
            "warnings": [str(warning) for warning in rules.warnings],
            "last_failed_reload": None
            if failure is None
            else {
                "at": failure.at.isoformat(),
                "trigger": failure.trigger,
                "problems": [str(problem) for problem in failure.problems],
            },
        }


_RELEVANT = (".yaml", ".yml", ".txt", ".csv")  # rule files, list files, map files


def _worth_a_look(change: watchfiles.Change, path: str) -> bool:
    """A change to a rule, list or map file, or to a `..`-named entry (a ConfigMap's `..data` symlink
    swap names no rule file); not editor litter (`.x.swp`, `x~`, `.#x`) nor anything else in the folder
    (a log file beside a rules file would otherwise reload it on every line). Whether the rules really
    changed is then decided by their content hash."""
    name = Path(path).name
    if name.startswith(".."):
        return True
    return name.endswith(_RELEVANT) and not name.startswith((".#", "."))


def watched_folders(reloader: RuleReloader) -> list[Path]:
    """The rules folder (or a rules file's folder), watched with its subfolders (lists/, maps/), and the
    folders of list and map files the rules name elsewhere. Watching folders rather than files sees a
    file deleted and re-created, renamed over, or a symlink swapped."""
    source = reloader.source
    root = source if source.is_dir() else source.parent
    folders = [root]
    for path in reloader.rules.data_files:
        folder = Path(os.path.normpath(path.parent))  # `rules/../lists` is not inside `rules`
        if folder not in folders and not folder.is_relative_to(root):
            folders.append(folder)
    return folders


RETRY_SECONDS = 1.0  # a watched folder that vanished is looked for again this often


async def watch(reloader: RuleReloader, stop: asyncio.Event, debounce_ms: int) -> None:
    """Reload whenever the watched folders change (bursts debounced); the revision hash decides whether
    anything really changed. A reload that names list or map files in other folders moves the watch.
    Runs until stop is set."""
    failing = False
    while not stop.is_set():
        folders = watched_folders(reloader)
        if not failing:
            log.info("rules_watch_started", folders=[str(folder) for folder in folders], debounce_ms=debounce_ms)
        try:
            watcher = watchfiles.awatch(
                *folders, watch_filter=_worth_a_look, debounce=debounce_ms, step=50, stop_event=stop, recursive=True
            )
            async for changes in watcher:
                log.debug("rules_changed", changes=sorted(path for _, path in changes)[:10])
                await reloader.reload(trigger="watch")
                if watched_folders(reloader) != folders:
                    break
        except (OSError, RuntimeError) as exc:  # a watched folder deleted: the live set keeps serving
            if not failing:
                log.warning("rules_watch_failed", folders=[str(folder) for folder in folders], error=str(exc))
                failing = True
            try:
                await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
            except TimeoutError:
                if all(folder.exists() for folder in folders):  # back: what changed meanwhile counts
                    log.info("rules_watch_resumed", folders=[str(folder) for folder in folders])
                    failing = False
                    await reloader.reload(trigger="watch")
