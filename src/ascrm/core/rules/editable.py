"""Editable lists: a rule file's list that the admin API changes at run time.

The compiled `{in: name}` condition holds an EditableList: one object per list name for as long as the
process runs, kept by EditableLists across rule reloads. Its current contents are an immutable
NumberList, replaced in one assignment when a change arrives, so `decide` reads one reference and does
no I/O. Where the contents live (a file, Redis) and how replicas learn of a change is the service's
part (service/editable.py); this module holds the contents and checks the entries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.lists import ListError, Normalize, NumberList, number_list

MAX_ENTRY_CHARS = 32  # of an entry as written: the longest number (15 digits) with its separators
_SEPARATORS = frozenset(" \t\u00a0-.()")


class EntryError(ValueError):
    """An entry the admin API refuses; the message names it."""


@dataclass(frozen=True, slots=True)
class Contents:
    """What an editable list holds: its entries in the stored form ('79161234567', '7916*') and them as a
    NumberList, with the backend's version of them (0: not known to the backend yet)."""

    entries: frozenset[str]
    numbers: NumberList
    version: int = 0


def contents_of(entries: Iterable[str], version: int = 0) -> Contents:
    """Contents of entries in the stored form (already checked); ListError when one is not."""
    kept = frozenset(entries)
    return Contents(kept, number_list(sorted(kept)), version)


EMPTY = contents_of(())


def parse_entry(text: str, normalize: Normalize | None) -> str:
    """An entry the admin API was given ('+7 916 123-45-67', '7916*') in the stored form: normalised as
    the list's rule file says, a prefix ending in '*'. EntryError names what is wrong."""
    if len(text) > MAX_ENTRY_CHARS:
        raise EntryError(f"entry {excerpt(text)}: longer than {MAX_ENTRY_CHARS} characters")
    written = text.strip()
    prefix = written.endswith("*")
    head = written[:-1] if prefix else written
    if not head:
        what = "'*' alone would match every number" if prefix else "is blank"
        raise EntryError(f"entry {excerpt(text)}: {what} (write a number, or the digits of a prefix and '*')")
    if "*" in head:
        raise EntryError(f"entry {excerpt(text)}: has '*' inside: only a trailing '*' is a prefix")
    digits = head.removeprefix("+")
    if normalize is None:
        if not (digits.isascii() and digits.isdigit()):
            hint = " (write it without separators: the list's file has no `normalize: ru`)"
            hint = hint if digits and set(digits) <= _SEPARATORS | set("0123456789") else ""
            raise EntryError(f"entry {excerpt(text)}: not a number{hint}")
        normalized = head
    else:
        normalized = normalize(head)
        if not (normalized.isascii() and normalized.isdigit()):
            raise EntryError(f"entry {excerpt(text)}: not a number")
    return normalized + "*" if prefix else normalized


class EditableList:
    """One editable list: `value in it` reads its current contents; replace() swaps them whole."""

    __slots__ = ("_sorted", "attached", "contents", "name", "normalize", "seed")

    def __init__(self, name: str, normalize: Normalize | None, seed: Contents) -> None:
        self.name = name
        self.normalize = normalize  # how the admin API's entries are normalised (the rule file's setting)
        self.seed = seed  # the file's entries: what a list new to the backend starts with
        self.contents = seed
        self.attached = False  # whether contents come from the backend (else: the seed, until they do)
        self._sorted: tuple[int, tuple[str, ...]] | None = None

    def __contains__(self, value: object) -> bool:
        """Whether value (a number) is one of the entries or starts with one of the prefixes."""
        return isinstance(value, str) and value in self.contents.numbers

    def __len__(self) -> int:
        """How many entries."""
        return len(self.contents.entries)

    def __repr__(self) -> str:
        """Name and size only: a list may hold a million numbers."""
        return f"EditableList({self.name!r}, entries={len(self)})"

    def replace(self, contents: Contents) -> None:
        """Serve contents from now on (one assignment: a decision reads the old or the new ones)."""
        self.contents = contents
        self.attached = True

    def page(self, offset: int, limit: int) -> tuple[list[str], int]:
        """Entries offset..offset+limit in sorted order, and how many there are (sorted once per contents)."""
        contents = self.contents
        cached = self._sorted
        if cached is None or cached[0] != id(contents.entries):
            cached = (id(contents.entries), tuple(sorted(contents.entries)))
            self._sorted = cached
        entries = cached[1]
        return list(entries[offset : offset + limit]), len(entries)


class EditableLists:
    """The editable lists of a running server, by name: the same object for a name from one rule load
    to the next, so a reload keeps what was edited (a list new to the rules starts from its seed)."""

    def __init__(self) -> None:
        self._lists: dict[str, EditableList] = {}
        self._lock = threading.Lock()  # rules are compiled in a worker thread

    def holder(self, name: str, normalize: Normalize | None, seed: Contents) -> EditableList:
        """The list named name, made with seed when it is new; its normalisation follows the rules'."""
        with self._lock:
            found = self._lists.get(name)
            if found is None:
                found = self._lists[name] = EditableList(name, normalize, seed)
            else:
                found.normalize = normalize
                found.seed = seed
            return found

    def adopt(self, holders: Iterable[EditableList]) -> None:
        """Keep holders (of a rule set loaded before this registry was used) as the lists of their names."""
        with self._lock:
            for holder in holders:
                self._lists.setdefault(holder.name, holder)

    def get(self, name: str) -> EditableList | None:
        """The list named name, if the rules ever declared it."""
        return self._lists.get(name)

    def all(self) -> list[EditableList]:
        """Every list declared so far."""
        with self._lock:
            return list(self._lists.values())


def seed_of(numbers: NumberList | None) -> Contents:
    """A list file's entries as Contents in the stored form."""
    if numbers is None:
        return EMPTY
    entries = [*numbers.exact, *(prefix + "*" for prefix in numbers.prefixes)]
    return Contents(frozenset(entries), numbers)


__all__ = [
    "EMPTY",
    "MAX_ENTRY_CHARS",
    "Contents",
    "EditableList",
    "EditableLists",
    "EntryError",
    "ListError",
    "contents_of",
    "parse_entry",
    "seed_of",
]
