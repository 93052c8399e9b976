"""Candidate rules per event, narrowed by exact-value conditions, so 10,000 rules are not scanned."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ascrm.core.calls.state import CallState
from ascrm.core.protocol import CallEvent
from ascrm.core.rules.conditions import Getter, getter
from ascrm.core.rules.rule import CompiledRule, event_key

Hint = tuple[str, frozenset[str], Callable[[str], str] | None]  # field, exact values, normaliser


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The rules of one event: those looked up by an exact field value, and those always tried."""

    scan: tuple[CompiledRule, ...]
    lookups: tuple[tuple[Getter, Callable[[str], str] | None, Mapping[str, tuple[CompiledRule, ...]]], ...]


@dataclass(frozen=True, slots=True)
class RuleIndex:
    """Candidate rules per event type (or poll), narrowed by exact-value conditions."""

    buckets: Mapping[int | str, _Bucket]

    def candidates(self, event: CallEvent | None, call: CallState) -> Iterable[CompiledRule]:
        """The rules that may match, in rule order."""
        bucket = self.buckets.get(event_key(event))
        if bucket is None:
            return ()
        if not bucket.lookups:
            return bucket.scan
        found: list[CompiledRule] = []
        for read, normalize, table in bucket.lookups:
            value = read(event, call)
            if value is not None:
                found += table.get(normalize(value) if normalize else value, ())
        if not found:
            return bucket.scan
        found += bucket.scan
        found.sort(key=_order)
        return found


def _order(rule: CompiledRule) -> int:
    return rule.order


def build_index(rules: list[CompiledRule], hints: Mapping[str, Hint]) -> RuleIndex:
    """The index of rules; hints: per rule id, the first exact-value condition of its `if`."""
    keys = {key for rule in rules for key in rule.events}
    buckets = {}
    for key in keys:
        scan: list[CompiledRule] = []
        tables: dict[tuple[str, Any], dict[str, list[CompiledRule]]] = {}
        for rule in rules:
            if key not in rule.events:
                continue
            hint = hints.get(rule.id)
            if hint is None:
                scan.append(rule)
                continue
            field, values, normalize = hint
            table = tables.setdefault((field, normalize), {})
            for value in values:
                table.setdefault(value, []).append(rule)
        lookups = tuple(
            (getter(field), normalize, {value: tuple(found) for value, found in table.items()})
            for (field, normalize), table in tables.items()
        )
        buckets[key] = _Bucket(tuple(scan), lookups)
    return RuleIndex(buckets)
