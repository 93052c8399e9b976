"""Rule files → one immutable, indexed RuleSet; every mistake reported with its file and line."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ascrm.core.engine import RuleSet
from ascrm.core.lookups.looked_up import STICKY_MAPS, LiveMap
from ascrm.core.notify.target import Target, TargetError
from ascrm.core.protocol import FULL_NUMBER_ACTIONS, Action, EventType, ServiceType, param_error, parse_code
from ascrm.core.rules.actions import ActionError, parse_action
from ascrm.core.rules.calendar import BUILT_IN, Calendar, CalendarError, built_in, load_calendar
from ascrm.core.rules.conditions import (
    CONDITIONS,
    NUMBER_FIELDS,
    ConditionError,
    Definitions,
    compile_conditions,
    schedule_path,
)
from ascrm.core.rules.editable import EditableList, EditableLists, seed_of
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.explain import Check, build_checks
from ascrm.core.rules.index import Hint, build_index
from ascrm.core.rules.limits import RuleLimits
from ascrm.core.rules.lists import (
    ListError,
    NumberList,
    inline_map,
    load_list_file,
    load_map_file,
    normalize_ru,
    number_list,
)
from ascrm.core.rules.load import (
    Location,
    MarkedMap,
    Problem,
    RulesError,
    key_location,
    locate,
    read_yaml,
    rule_files,
)
from ascrm.core.rules.notify import MAX_NOTIFY, NotifyError, NotifyRule, parse_notify
from ascrm.core.rules.pools import MAX_POOLS, Pool, PoolError, parse_pool
from ascrm.core.rules.rule import POLL, CompiledRule
from ascrm.core.rules.schedule import Schedule, ScheduleError, parse_schedule
from ascrm.core.rules.schema import shape_errors
from ascrm.core.rules.services import admits, only
from ascrm.core.rules.source_requests import compile_source
from ascrm.core.rules.sources import CompiledSource, SourceError

_NORMALIZERS: dict[str, Callable[[str], str] | None] = {"none": None, "ru": normalize_ru}


MAX_ZONE_NAME = 64  # characters: the longest IANA name has 32
MAX_PROBLEMS = 100  # reported per load: a file with thousands of mistakes makes no megabyte answer or log line


def _known_zone(name: str) -> bool:
    """Whether name is an IANA time zone; a name longer than any (looked up as a path, a huge one
    takes a while to refuse) is not."""
    if len(name) > MAX_ZONE_NAME:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        return False
    return True


def _at_most(problems: list[Problem], limit: int) -> list[Problem]:
    """The first limit problems, then one saying there are more (the file's shape stops being checked
    past about limit, so how many more is not known)."""
    if len(problems) <= limit:
        return problems
    return [*problems[:limit], Problem(problems[limit].location, "… more problems, not shown")]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Lists and maps, by name, to use instead of the ones the rule files define (a rule test's case)."""

    lists: Mapping[str, Sequence[str]] = field(default_factory=dict)
    maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def load_rules(
    source: Path,
    default_timezone: str,
    *,
    explain: bool = False,
    overrides: Overrides | None = None,
    limits: RuleLimits | None = None,
    editable: EditableLists | None = None,
) -> RuleSet:
    """Read, check and compile a rules file or folder; RulesError lists every problem found.

    explain: also compile each rule's conditions one by one, for `rules.explain` (tools; the server
    never does). overrides: lists and maps replacing the defined ones of the same names. limits: the
    bounds on file sizes and YAML documents (RuleLimits() when not given). editable: the server's
    editable lists, kept from one load to the next (without it, each starts from its file).
    """
    files = rule_files(source)
    if not files:
        raise RulesError([Problem(Location(source), "no rule files (*.yaml, *.yml) in this folder")])
    compiler = _Compiler(
        default_timezone, explain=explain, overrides=overrides or Overrides(), limits=limits or RuleLimits()
    )
    compiler.editable = editable or EditableLists()
    for file in files:
        compiler.read(file)
    compiler.check()
    for file, document in compiler.documents:
        compiler.calendars_of(file, document)
    for file, document in compiler.documents:
        compiler.definitions(file, document)
    compiler.unknown_overrides(source)
    compiler.check()
    for file, document in compiler.documents:
        compiler.sources_of(file, document)
        compiler.pools_of(file, document)
        compiler.targets_of(file, document)
    compiler.check()
    for file, document in compiler.documents:
        compiler.notify_of(file, document)
    for file, document in compiler.documents:
        compiler.rules_of(file, document)
    compiler.check()
    from ascrm.core.rules.lint import lint

    return RuleSet(
        rules=tuple(compiler.rules),
        revision=compiler.revision(),
        index=build_index(compiler.rules, compiler.index_hints),
        files=tuple(files),
        data_files=tuple(compiler.data_files),
        warnings=(*compiler.warnings, *lint(compiler.rules, compiler.raw_rules)),
        sources=dict(compiler.sources),
        sticky=compiler.sticky,
        pools=dict(compiler.pools),
        targets=dict(compiler.targets),
        notify=tuple(compiler.notify),
        lists=tuple(compiler.lists),
        editable_lists=tuple(value for value in compiler.lists.values() if isinstance(value, EditableList)),
        calendars={name: calendar.last_day for name, calendar in compiler.calendars.items()},
    )


class _Compiler:
    """Collects definitions, rules and problems across the files of one rule set."""

    def __init__(self, default_timezone: str, *, explain: bool, overrides: Overrides, limits: RuleLimits) -> None:
        self.default_timezone = default_timezone
        self.limits = limits
        self.explain = explain
        self.overrides = overrides
        self.documents: list[tuple[Path, MarkedMap]] = []
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.schedules: dict[str, Schedule] = {}
        self.calendars: dict[str, Calendar] = {}
        self.used_calendars: dict[str, date | None] = {}  # name -> its last covered day
        self.lists: dict[str, NumberList | EditableList] = {}
        self.editable = EditableLists()
        self.maps: dict[str, Mapping[str, str]] = {}
        self.sources: dict[str, CompiledSource] = {}
        self.pools: dict[str, Pool] = {}
        self.targets: dict[str, Target] = {}
        self.notify: list[NotifyRule] = []
        self.live_maps = {name: LiveMap(name) for name in STICKY_MAPS}  # the last operator's
        self.sticky = False  # a rule reads them
        self.defined_at: dict[tuple[str, str], Location] = {}
        self.rules: list[CompiledRule] = []
        self.raw_rules: list[Mapping[str, Any]] = []
        self.index_hints: dict[str, Hint] = {}
        self.digest = hashlib.sha256()
        self.data_files: list[Path] = []  # list and map files, in the order read

    def check(self) -> None:
        if self.problems:
            raise RulesError(_at_most(self.problems, MAX_PROBLEMS))

    def problem(self, file: Path, document: Any, path: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        fallback = Location(file, 1, 1)
        where = key_location(document, path, fallback) if key else locate(document, path, fallback)
        self.problems.append(Problem(where, message))

    def read(self, file: Path) -> None:
        try:
            document = read_yaml(file, self.limits)
        except RulesError as exc:
            self.problems += exc.problems
            return
        self.digest.update(str(file.name).encode() + b"\0" + file.read_bytes() + b"\0")
        if document is None:
            document = MarkedMap()
            document.location, document.key_locations, document.value_locations = Location(file, 1, 1), {}, {}
        for path, message, about_key in shape_errors(document):
            self.problem(file, document, path, message, key=about_key)
        if isinstance(document, MarkedMap):
            self.documents.append((file, document))

    def settings(self, file: Path, document: MarkedMap) -> tuple[str, Callable[[str], str] | None]:
        zone = document.get("timezone", self.default_timezone)
        if not _known_zone(zone):
            message = f"unknown time zone {excerpt(zone)} (an IANA name: Europe/Moscow)"
            self.problem(file, document, ("timezone",), message)
            zone = self.default_timezone
        return zone, _NORMALIZERS[document.get("normalize", "none")]

    def define(self, kind: str, name: str, file: Path, document: MarkedMap) -> bool:
        where = key_location(document, (kind, name), Location(file))
        first = self.defined_at.get((kind, name))
        if first is not None:
            self.problems.append(Problem(where, f"{kind[:-1]} {excerpt(name)} is defined twice (first at {first})"))
            return False
        self.defined_at[(kind, name)] = where
        return True

    def calendars_of(self, file: Path, document: MarkedMap) -> None:
        """The file's `calendars:` (before any file's schedules: a schedule may name one from another file)."""
        for name, spec in (document.get("calendars") or {}).items():
            if not self.define("calendars", name, file, document):
                continue
            try:
                calendar, read = load_calendar(name, file.parent / spec["file"])
            except CalendarError as exc:
                if isinstance(exc.path, Path) and exc.line:  # a bad line in the calendar file
                    message = f"calendar {excerpt(name)}: {exc.message}"
                    self.problems.append(Problem(Location(exc.path, exc.line), message))
                else:
                    self.problem(file, document, ("calendars", name, "file"), f"calendar {excerpt(name)}: {exc}")
                continue
            self.data_files += read
            for path in read:
                self.digest.update(path.read_bytes())
            self.calendars[name] = calendar

    def definitions(self, file: Path, document: MarkedMap) -> None:
        zone, normalize = self.settings(file, document)
        for name, spec in (document.get("schedules") or {}).items():
            if not self.define("schedules", name, file, document):
                continue
            wanted = spec.get("calendar")
            if wanted in BUILT_IN and wanted not in self.calendars:
                self.calendars[wanted] = built_in(wanted)
            try:
                self.schedules[name] = parse_schedule(spec, zone, self.calendars)
            except ScheduleError as exc:
                at = ("schedules", name, *schedule_path(spec, exc.key))
                self.problem(file, document, at, f"schedule {excerpt(name)}: {exc}")
                continue
            self.calendar_ends(file, document, name, self.schedules[name].calendar)
        for kind in ("lists", "maps"):
            for name in set(document.get(kind) or {}) & set(STICKY_MAPS):
                message = f"{kind[:-1]} {excerpt(name)}: a built-in map has this name (the last operator's)"
                self.problem(file, document, (kind, name), message, key=True)
        for name, spec in (document.get("lists") or {}).items():
            if self.define("lists", name, file, document):
                self.list_of(file, document, name, spec, normalize)
        for name, spec in (document.get("maps") or {}).items():
            if self.define("maps", name, file, document):
                self.map_of(file, document, name, spec, normalize)

    def sources_of(self, file: Path, document: MarkedMap) -> None:
        """The file's `sources:` (after every file's lists and maps: a source's URL may read a map)."""
        _, normalize = self.settings(file, document)
        for name, spec in (document.get("sources") or {}).items():
            if not self.define("sources", name, file, document):
                continue
            if name in CONDITIONS or name in self.lists or name in self.maps:
                what = "a condition" if name in CONDITIONS else "a list" if name in self.lists else "a map"
                message = f"source {excerpt(name)}: {what} has this name"
                self.problem(file, document, ("sources", name), message, key=True)
                continue
            try:
                self.sources[name] = compile_source(name, spec, self.maps, normalize)
            except SourceError as exc:
                self.problem(file, document, ("sources", name, *exc.path), f"source {excerpt(name)}: {exc.message}")

    def names(self) -> tuple[frozenset[str], frozenset[str]]:
        """The sources' and pools' names, as a `do:` reads them."""
        return frozenset(self.sources), frozenset(self.pools)

    def pools_of(self, file: Path, document: MarkedMap) -> None:
        """The file's `pools:` (after every file's schedules: a member's time: names one)."""
        for name, spec in (document.get("pools") or {}).items():
            if not self.define("pools", name, file, document):
                continue
            if len(self.pools) >= MAX_POOLS:
                message = f"pool {excerpt(name)}: more than {MAX_POOLS} pools"
                self.problem(file, document, ("pools", name), message, key=True)
                return
            try:
                self.pools[name] = parse_pool(name, spec, self.schedules)
            except PoolError as exc:
                self.problem(file, document, ("pools", name, *exc.path), f"pool {excerpt(name)}: {exc.message}")

    def targets_of(self, file: Path, document: MarkedMap) -> None:
        """The file's `targets:`, where notifications go."""
        from ascrm.core.rules.targets import MAX_TARGETS, compile_target

        for name, spec in (document.get("targets") or {}).items():
            if not self.define("targets", name, file, document):
                continue
            if len(self.targets) >= MAX_TARGETS:
                message = f"target {excerpt(name)}: more than {MAX_TARGETS} targets"
                self.problem(file, document, ("targets", name), message, key=True)
                return
            try:
                self.targets[name] = compile_target(name, spec)
            except TargetError as exc:
                self.problem(file, document, ("targets", name, *exc.path), f"target {excerpt(name)}: {exc.message}")

    def notify_of(self, file: Path, document: MarkedMap) -> None:
        """The file's `notify:` (after every file's targets: an entry names one)."""
        zone, normalize = self.settings(file, document)
        kinds = {name: target.kind for name, target in self.targets.items()}
        for number, raw in enumerate(document.get("notify") or []):
            at = ("notify", number)
            where = locate(document, (*at, "id"), Location(file))
            first = self.defined_at.get(("notify", raw["id"]))
            if first is not None:
                self.problems.append(Problem(where, f"notify id {excerpt(raw['id'])} is used twice (first at {first})"))
                continue
            self.defined_at[("notify", raw["id"])] = where
            if len(self.notify) >= MAX_NOTIFY:
                self.problem(file, document, at, f"more than {MAX_NOTIFY} notify entries")
                return
            defs = Definitions(self.schedules, self.lists, self.maps, zone, normalize, [], frozenset(self.sources))
            try:
                self.notify.append(replace(parse_notify(raw, defs, kinds), where=str(where)))
            except NotifyError as exc:
                message = f"notify {excerpt(raw['id'])}: {exc.message}"
                self.problem(file, document, (*at, *exc.path), message, key=exc.about_key)

    def unknown_overrides(self, source: Path) -> None:
        for kind, given in (("lists", self.overrides.lists), ("maps", self.overrides.maps)):
            defined = sorted(name for (what, name) in self.defined_at if what == kind)
            for name in given:
                if name not in defined:
                    names = ", ".join(defined) or "none"
                    message = f"no {kind[:-1]} named {excerpt(name)} to replace (the rules define: {names})"
                    self.problems.append(Problem(Location(source), message))

    def calendar_ends(self, file: Path, document: MarkedMap, schedule: str, calendar: Calendar | None) -> None:
        """Note the calendar a schedule uses; warn (once per calendar) when it ends before next year."""
        if calendar is None or calendar.name in self.used_calendars:
            return
        last = self.used_calendars[calendar.name] = calendar.last_day
        next_year = datetime.now(UTC).year + 1
        if last is not None and last.year >= next_year:
            return
        where = locate(document, ("schedules", schedule, "calendar"), Location(file))
        ends = f"ends on {last}" if last is not None else "covers no year"
        message = f"schedule {excerpt(schedule)}: calendar {excerpt(calendar.name)} {ends}, before {next_year}:"
        message += " a year it does not cover follows the plain week (add it: ascrm calendar import)"
        self.warnings.append(Problem(where, message, "warning"))

    def list_of(self, file: Path, doc: MarkedMap, name: str, spec: Any, normalize: Any) -> None:
        try:
            if name in self.overrides.lists:
                self.lists[name] = number_list(self.overrides.lists[name], normalize)
            elif isinstance(spec, dict) and spec.get("editable"):
                self.lists[name] = self.editable.holder(name, normalize, seed_of(self.list_file(file, spec, normalize)))
            elif isinstance(spec, dict):
                path = file.parent / spec["file"]
                self.data_files.append(path)
                self.lists[name] = load_list_file(path, normalize, limits=self.limits)
                self.digest.update(path.read_bytes())
            else:
                self.lists[name] = number_list(spec, normalize)
        except ListError as exc:
            self.list_problem(file, doc, ("lists", name), exc)

    def list_file(self, file: Path, spec: dict[str, Any], normalize: Any) -> NumberList | None:
        """The entries of an editable list's seed file, if it names one (read as a list's `file:` is)."""
        if "file" not in spec:
            return None
        path = file.parent / spec["file"]
        self.data_files.append(path)
        numbers = load_list_file(path, normalize, limits=self.limits)
        self.digest.update(path.read_bytes())
        return numbers

    def map_of(self, file: Path, doc: MarkedMap, name: str, spec: Any, normalize: Any) -> None:
        if set(spec) == {"file"} and (not isinstance(spec["file"], str) or not spec["file"]):
            self.problem(file, doc, ("maps", name, "file"), f"map {excerpt(name)}: file: takes the path of a CSV file")
            return
        try:
            if name in self.overrides.maps:
                self.maps[name] = inline_map(self.overrides.maps[name], normalize)
            elif set(spec) == {"file"}:
                path = file.parent / spec["file"]
                self.data_files.append(path)
                self.maps[name] = load_map_file(path, normalize, limits=self.limits)
                self.digest.update(path.read_bytes())
            else:
                self.maps[name] = inline_map(spec, normalize)
        except ListError as exc:
            self.list_problem(file, doc, ("maps", name), exc)

    def list_problem(self, file: Path, doc: MarkedMap, at: tuple[Any, ...], exc: ListError) -> None:
        if exc.path is not None and exc.line is not None:  # a bad line in the list or map file
            self.problems.append(Problem(Location(exc.path, exc.line), exc.message))
            return
        entry = re.match(r"entry (\d+): ", exc.message)  # an inline list's item: point at it
        if entry is not None and isinstance(doc.get(at[0], {}).get(at[1]), list):
            at = (*at, int(entry.group(1)) - 1)
        elif exc.path is not None:
            at = (*at, "file")
        message = exc.message if exc.path is None else f"{exc.path}: {exc.message}"
        self.problem(file, doc, at, f"{at[0][:-1]} {excerpt(at[1])}: {message}")

    def rules_of(self, file: Path, document: MarkedMap) -> None:
        zone, normalize = self.settings(file, document)
        for number, raw in enumerate(document.get("rules") or []):
            at = ("rules", number)
            rule_id = raw["id"]
            where = locate(document, (*at, "id"), Location(file))
            first = self.defined_at.get(("rules", rule_id))
            if first is not None:
                self.problems.append(Problem(where, f"rule id {excerpt(rule_id)} is used twice (first at {first})"))
                continue
            self.defined_at[("rules", rule_id)] = where
            events = self.events(file, document, at, raw["on"])
            maps = {**self.maps, **self.live_maps}
            defs = Definitions(self.schedules, self.lists, maps, zone, normalize, [], frozenset(self.sources))
            condition = None
            if "if" in raw:
                try:
                    condition = compile_conditions(raw["if"], defs)
                except ConditionError as exc:
                    message = f"rule {excerpt(rule_id)}: {exc.message}"
                    self.problem(file, document, (*at, "if", *exc.path), message, key=exc.about_key)
                    continue
            try:
                action, template = parse_action(raw["do"], maps, normalize, *self.names())
            except ActionError as exc:
                self.problem(file, document, (*at, "do", *exc.path), f"rule {excerpt(rule_id)}: {exc.message}")
                continue
            if events is None:
                continue
            literal = template.literal
            self.normalized_number(file, document, (*at, "do"), raw, action=action, literal=literal)
            if literal is not None and POLL not in events and param_error(action, literal) is not None:
                message = f"rule {excerpt(rule_id)}: TransferPBX param {excerpt(literal)}: this form is for"
                message += " outgoing-call polls"
                self.problem(file, document, (*at, "do"), f"{message} (on: poll); answers to events take PBX…")
                continue
            unfit = poll_param_error(raw.get("if"), action, literal) if POLL in events else None
            if unfit is not None:
                self.problem(file, document, (*at, "do"), f"rule {rule_id!r}: {unfit}")
                continue
            repeat = bool(raw.get("repeat"))
            checks: tuple[Check, ...] = ()
            if self.explain and "if" in raw:
                places = {key: key_location(document, (*at, "if", key), where) for key in raw["if"]}
                checks = build_checks(raw["if"], defs, places.__getitem__)
            rule = CompiledRule(rule_id, len(self.rules), where, events, condition, action, template, repeat, checks)
            self.rules.append(rule)
            self.raw_rules.append(raw)
            self.sticky = self.sticky or _reads_live_maps(raw.get("if"), raw["do"])
            if defs.index_hint:
                field, values = defs.index_hint[0]
                self.index_hints[rule_id] = (field, values, normalize if field in NUMBER_FIELDS else None)

    def normalized_number(
        self, file: Path, document: MarkedMap, at: tuple[Any, ...], raw: Any, *, action: Action, literal: str | None
    ) -> None:
        """Warn of a literal number param written otherwise than it is sent (`normalize: ru` completed it)."""
        spec = raw["do"]
        if literal is None or action not in FULL_NUMBER_ACTIONS or not isinstance(spec, dict):
            return
        [(name, written)] = spec.items()
        if str(written) != literal:
            where = locate(document, (*at, name), Location(file))
            message = f"rule {raw['id']!r}: {action.name} param {str(written)!r} is not in the full form:"
            self.warnings.append(Problem(where, f"{message} `normalize: ru` sends it as {literal!r}", "warning"))

    def events(self, file: Path, document: MarkedMap, at: tuple[Any, ...], spec: Any) -> frozenset[int | str] | None:
        found: set[int | str] = set()
        for index, item in enumerate(spec if isinstance(spec, list) else [spec]):
            if isinstance(item, str) and item.lower() == POLL:
                found.add(POLL)
                continue
            code = parse_code(item, EventType)
            if code is None or int(code) < 0:
                names = ", ".join(member.name for member in EventType)
                path = (*at, "on", index) if isinstance(spec, list) else (*at, "on")
                self.problem(file, document, path, f"unknown event {excerpt(item)} (known: {names}, poll, or a code)")
                return None
            found.add(int(code))
        return frozenset(found)

    def revision(self) -> str:
        return self.digest.hexdigest()[:12]


def _reads_live_maps(*specs: Any) -> bool:
    """Whether a rule's `if:` or `do:` reads a built-in map of the last operator ({in: last_ext},
    {last_dn[AN]})."""
    for spec in specs:
        if isinstance(spec, str):
            if any(f"{{{name}[" in spec for name in STICKY_MAPS):
                return True
        elif isinstance(spec, dict):
            if spec.get("in") in STICKY_MAPS or _reads_live_maps(*spec.values()):
                return True
        elif isinstance(spec, list) and _reads_live_maps(*spec):
            return True
    return False


def poll_param_error(conditions: Mapping[str, Any] | None, action: Action, literal: str | None) -> str | None:
    """Why a poll rule's literal param fits the poll of no call its conditions let through, or None.

    An outgoing call's (MTSPBX) polls take TransferPBX in the outgoing forms, others take PBX…: a
    rule for outgoing calls only with `PBX123`, or for inbound calls only with `8000…`, never answers.
    """
    if literal is None:
        return None
    outgoing = admits(conditions, ServiceType.MTSPBX)
    if outgoing and param_error(action, literal, outgoing_poll=True) is None:
        return None
    problem = param_error(action, literal)
    if not only(conditions, ServiceType.MTSPBX) and problem is None:
        return None
    unfit = f"{action.name} param {literal!r} fits no poll this rule answers:"
    if not outgoing:
        return f"{unfit} its calls are not outgoing ones (MTSPBX), and it {problem}"
    outgoing_problem = param_error(action, literal, outgoing_poll=True)
    if only(conditions, ServiceType.MTSPBX):  # its calls are outgoing ones: say what their polls take
        return f"{unfit} its calls are outgoing (MTSPBX), and {outgoing_problem}"
    return f"{unfit} it {problem}; and for outgoing calls (MTSPBX), {outgoing_problem}"
