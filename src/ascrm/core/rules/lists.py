"""Number lists, maps and Russian number normalization for the rules: loaded once, looked up per call."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.limits import RuleLimits
from ascrm.errors import AscrmError

Normalize = Callable[[str], str]

_SEPARATORS = str.maketrans("", "", " \t\u00a0-.()")
_STAR_INSIDE = "has '*' inside: only a trailing '*' is a prefix"


class ListError(AscrmError, ValueError):
    """A list or map entry (or file) is wrong."""

    def __init__(self, path: Path | None, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = "" if path is None else f"{path}:" if line is None else f"{path}:{line}:"
        super().__init__(f"{where} {message}" if where else message)


def normalize_ru(number: str) -> str:
    """Russian number forms to one: '+7 (916) 123-45-67', '89161234567', '9161234567' -> '79161234567'."""
    digits = number.translate(_SEPARATORS)
    if digits.startswith("+"):
        digits = digits[1:]
    if digits.isascii() and digits.isdigit():
        if len(digits) == 11 and digits[0] == "8":
            return "7" + digits[1:]
        if len(digits) == 10:
            return "7" + digits
    return digits


@dataclass(frozen=True, slots=True)
class NumberList:
    """Exact numbers and prefixes ('7916555*'); membership in O(number length)."""

    exact: AbstractSet[str]  # a frozenset; a big list's a ShardedSet
    prefixes: frozenset[str]
    prefix_lengths: tuple[int, ...]  # distinct prefix lengths, ascending

    def __contains__(self, value: str) -> bool:
        """True if value is one of the exact numbers or starts with one of the prefixes."""
        if value in self.exact:
            return True
        prefixes = self.prefixes
        for n in self.prefix_lengths:  # noqa: SIM110 - a plain loop: any() and its generator cost more per call
            if value[:n] in prefixes:
                return True
        return False

    def __len__(self) -> int:
        """Number of entries: exact numbers plus prefixes."""
        return len(self.exact) + len(self.prefixes)

    def __repr__(self) -> str:
        """Sizes only: a list may hold a million numbers."""
        return f"NumberList(exact={len(self.exact)}, prefixes={len(self.prefixes)})"


class _EntryError(Exception):
    """Entry `index` (0-based, among the non-blank entries) is wrong; the caller maps it to a line."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


_NUMBERISH = frozenset("0123456789+*-.() \t\u00a0")


def quote_from_file(text: str) -> str:
    """An excerpt of a list or map file's entry when it is made of digits and separators; else only its
    length: a file named by mistake (or a symlink to a system file) has its lines kept out of errors."""
    if set(text) <= _NUMBERISH:
        return excerpt(text)
    return f"(text of {len(text)} characters)"


_STEP = 50_000  # items per C-level step over a big list: a few ms each, so other threads get the GIL


def _split_lines(text: str) -> list[str]:
    """text.split("\\n"), a megabyte at a time."""
    lines: list[str] = []
    start = 0
    while True:
        end = text.find("\n", start + 1_000_000)
        if end == -1:
            lines += text[start:].split("\n")
            return lines
        lines += text[start:end].split("\n")
        start = end + 1


class ShardedSet(AbstractSet[str]):
    """A big set of texts kept in 64 sets by hash: built, and grown, a few milliseconds at a time (one
    set of a million grows in a single 40 ms step that holds the GIL); a look-up is one more index."""

    __slots__ = ("_count", "_shards")

    def __init__(self, items: list[str]) -> None:
        shards: tuple[set[str], ...] = tuple(set() for _ in range(_SHARDS))
        for item in items:  # a Python loop: other threads get the GIL between its steps
            shards[hash(item) & (_SHARDS - 1)].add(item)
        self._shards = shards
        self._count = sum(map(len, shards))

    def __contains__(self, value: object) -> bool:
        """Whether value is one of the texts."""
        return value in self._shards[hash(value) & (_SHARDS - 1)]

    def __iter__(self) -> Iterator[str]:
        """The texts, in no particular order."""
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        """How many texts."""
        return self._count


_SHARDS = 64  # a power of two


def _set_of(items: list[str]) -> AbstractSet[str]:
    """frozenset(items); for many items, a ShardedSet."""
    return frozenset(items) if len(items) <= _STEP else ShardedSet(items)


def _build(entries: list[str], normalize: Normalize | None, quote: Callable[[str], str] = excerpt) -> NumberList:
    """A NumberList from stripped entries; raises _EntryError naming (quoting) the first bad entry."""
    starred = [e for e in entries if "*" in e]
    plain = [e for e in entries if "*" not in e] if starred else entries
    for entry in starred:
        if "*" in entry[:-1]:
            raise _EntryError(entries.index(entry), f"{quote(entry)} {_STAR_INSIDE}")
    heads = [e[:-1] for e in starred]
    if normalize is not None:
        plain = [normalize(e) for e in plain]
        heads = [normalize(h) if h else h for h in heads]
    exact = _set_of(plain)
    if "" in exact:  # blank, or normalized to nothing
        bad = next(e for e in entries if "*" not in e and (normalize(e) if normalize else e) == "")
        raise _EntryError(entries.index(bad), f"{quote(bad)} is not a number" if bad else "blank entry")
    prefixes = frozenset(heads)
    if "" in prefixes and normalize is not None:  # only '*' itself may mean "every number"
        for entry in starred:
            if entry != "*" and normalize(entry[:-1]) == "":
                raise _EntryError(entries.index(entry), f"{quote(entry)} is not a number prefix")
    return NumberList(exact, prefixes, tuple(sorted({len(p) for p in prefixes})))


def number_list(entries: Iterable[str], normalize: Normalize | None = None) -> NumberList:
    """A NumberList from entries ('79161234567', '7916555*', '*' for every number); ints are taken as text."""
    if isinstance(entries, str):  # iterating it would make '7916*' five entries, one of them '*'
        raise ListError(None, None, f"expected a list of entries, got the text {excerpt(entries)}")
    items: list[object] = list(entries)
    texts = [e if type(e) is str else _scalar(e, f"entry {i}") for i, e in enumerate(items, 1)]
    stripped = list(map(str.strip, texts))
    try:
        return _build(stripped, normalize)
    except _EntryError as exc:
        raise ListError(None, None, f"entry {exc.index + 1}: {exc.message}") from None


def _read(path: Path, limits: RuleLimits | None) -> str:
    """The file's text (UTF-8, a BOM tolerated); ListError if it cannot be read or decoded, or is too big."""
    limits = limits or RuleLimits()
    try:
        size = path.stat().st_size
        if size > limits.data_file_bytes:
            raise ListError(path, None, _too_big(f"{size} bytes", limits.data_file_bytes, "data_file_bytes"))
        data = path.read_bytes()
    except OSError as exc:
        raise ListError(path, None, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limits.data_file_bytes:  # grew since
        raise ListError(path, None, _too_big(f"{len(data)} bytes", limits.data_file_bytes, "data_file_bytes"))
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if lines > limits.data_file_lines:
        raise ListError(path, None, _too_big(f"{lines} lines", limits.data_file_lines, "data_file_lines"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ListError(path, line, f"not UTF-8 (byte {data[exc.start]:#04x})") from None


def _too_big(what: str, limit: int, key: str) -> str:
    return f"refused: the file has {what}, more than {limit} (limits.rules.{key})"


def load_list_file(path: Path, normalize: Normalize | None = None, *, limits: RuleLimits | None = None) -> NumberList:
    """A NumberList from a text file: one entry per line, '#' starts a comment, blank lines skipped."""
    text = _read(path, limits)
    lines = _split_lines(text)
    if "#" in text:
        lines = [line.partition("#")[0] for line in lines]
    stripped: list[str] = []
    entries: list[str] = []
    for start in range(0, len(lines), _STEP):  # in steps: one C call over a million lines holds the GIL
        part = list(map(str.strip, lines[start : start + _STEP]))
        stripped += part
        entries += filter(None, part)
    try:
        return _build(entries, normalize, quote_from_file)
    except _EntryError as exc:
        line = [n for n, entry in enumerate(stripped, 1) if entry][exc.index]
        raise ListError(path, line, exc.message) from None


def _number_like(text: str) -> bool:
    """True for digits with optional separators and a leading '+': a key, not a header."""
    digits = text.translate(_SEPARATORS).removeprefix("+")
    return digits.isascii() and digits.isdigit()


def _irregular_row(row: list[str], path: Path, line: int) -> None:
    """Returns for a blank or comment row; raises ListError for any other row the fast path refused."""
    first = row[0].strip() if row else ""
    if first.startswith("#") or not any(cell.strip() for cell in row):
        return
    if len(row) != 2:
        hint = " (the file looks ';'-separated: use ',')" if len(row) == 1 and ";" in first else ""
        raise ListError(path, line, f"expected 2 columns (key,value), got {len(row)}{hint}")
    if not first:
        raise ListError(path, line, f"empty key (value {quote_from_file(row[1].strip())})")
    raise ListError(path, line, f"empty value for key {quote_from_file(first)}")


def _parse_map(text: str, path: Path, normalize: Normalize | None, track: bool) -> tuple[dict[str, str], int]:
    """The map and the number of data rows; with track, raises ListError on the first duplicate key."""
    result: dict[str, str] = {}
    first_line: dict[str, int] = {}
    rows = 0
    header_possible = True
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            if len(row) == 2:
                key = row[0].strip()
                value = row[1].strip()
                if key and value and key[0] != "#":
                    if header_possible:
                        header_possible = False
                        if not _number_like(key):
                            continue
                    if normalize is not None:
                        key = normalize(key)
                        if not key:
                            raise ListError(
                                path, reader.line_num, f"key {quote_from_file(row[0].strip())} is not a number"
                            )
                    if track:
                        if key in first_line:
                            message = f"duplicate key {quote_from_file(key)} (first on line {first_line[key]})"
                            raise ListError(path, reader.line_num, message)
                        first_line[key] = reader.line_num
                    result[key] = value
                    rows += 1
                    continue
            _irregular_row(row, path, reader.line_num)
    except csv.Error as exc:
        hint = ": a quoted value is not closed" if "end of data" in str(exc) else ""
        raise ListError(path, _row_start(text), f"bad CSV: {exc}{hint}") from None
    return result, rows


def _row_start(text: str) -> int:
    """The line where the first row that is not valid CSV starts."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    done = 0
    with contextlib.suppress(csv.Error):
        for _ in reader:
            done = reader.line_num
    return done + 1


def load_map_file(
    path: Path, normalize_keys: Normalize | None = None, *, limits: RuleLimits | None = None
) -> dict[str, str]:
    """A key -> value map from a 2-column CSV file (key,value); an optional header row is skipped."""
    text = _read(path, limits)
    result, rows = _parse_map(text, path, normalize_keys, track=False)
    if len(result) != rows:
        _parse_map(text, path, normalize_keys, track=True)  # raises, naming both lines
    return result


def _scalar(raw: object, what: str) -> str:
    """A YAML scalar (str or int) as stripped text; ListError naming `what` for anything else."""
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if raw is None:
        return ""
    got = f"{type(raw).__name__} {excerpt(raw)}"
    raise ListError(None, None, f"{what}: expected a number or text (quote it in YAML), got {got}")


def inline_map(mapping: Mapping[Any, Any], normalize_keys: Normalize | None = None) -> dict[str, str]:
    """A key -> value map from an inline YAML mapping; int keys and values become text."""
    result: dict[str, str] = {}
    written: dict[str, object] = {}
    for raw_key, raw_value in mapping.items():
        key = _scalar(raw_key, f"key {excerpt(raw_key)}")
        value = _scalar(raw_value, f"value of key {excerpt(raw_key)}")
        if not key:
            raise ListError(None, None, f"empty key {excerpt(raw_key)} (value {excerpt(raw_value)})")
        if not value:
            raise ListError(None, None, f"empty value for key {excerpt(raw_key)}")
        if normalize_keys is not None:
            key = normalize_keys(key)
            if not key:
                raise ListError(None, None, f"key {excerpt(raw_key)} is not a number")
        if key in written:
            message = f"duplicate key {excerpt(key)} (written {excerpt(written[key])} and {excerpt(raw_key)})"
            raise ListError(None, None, message)
        written[key] = raw_key
        result[key] = value
    return result
