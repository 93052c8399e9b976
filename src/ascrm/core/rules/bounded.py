"""A pass over a YAML document's events that refuses it when nested too deep or too big, aliases expanded.

An alias costs what the node it names costs (its nodes and its scalar text), every time it is used:
a few hundred bytes of aliases naming aliases ("billion laughs") are refused at the alias that crosses
the limit, before anything composes or walks the expanded structure. Ordinary reuse of an anchor stays
cheap. The pass streams libyaml's events and keeps only a stack and the anchors' costs, so refusing a
file costs a fraction of reading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    ScalarEvent,
)

from ascrm.core.rules.limits import RuleLimits


class LimitError(Exception):
    """The document passes one of the limits at mark; message names it."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark, self.message = mark, message


def check_events(events: Iterable[Event], limits: RuleLimits) -> None:
    """Raise LimitError at the first event past limits.depth, limits.nodes or the text limit."""
    nodes = chars = 0
    open_collections: list[tuple[str | None, int, int]] = []  # (anchor, nodes before, chars before)
    costs: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, chars) of the complete node it names

    def charge(more_nodes: int, more_chars: int, event: Event) -> None:
        nonlocal nodes, chars
        nodes += more_nodes
        chars += more_chars
        how = " (aliases counted each time they are used)" if isinstance(event, AliasEvent) else ""
        if nodes > limits.nodes:
            raise LimitError(event.start_mark, f"more than {limits.nodes} YAML nodes{how} (limits.rules.nodes)")
        if chars > limits.text_chars:
            message = f"more than {limits.text_chars} characters of text{how} (limits.rules.file_bytes)"
            raise LimitError(event.start_mark, message)

    for event in events:
        if isinstance(event, ScalarEvent):
            charge(1, len(event.value), event)
            if event.anchor is not None:
                costs[event.anchor] = (1, len(event.value))
        elif isinstance(event, CollectionStartEvent):
            if len(open_collections) >= limits.depth:
                raise LimitError(event.start_mark, f"nested deeper than {limits.depth} levels (limits.rules.depth)")
            open_collections.append((event.anchor, nodes, chars))
            charge(1, 0, event)
        elif isinstance(event, CollectionEndEvent):
            anchor, nodes_before, chars_before = open_collections.pop()
            if anchor is not None:
                costs[anchor] = (nodes - nodes_before, chars - chars_before)
        elif isinstance(event, AliasEvent):
            cost = costs.get(event.anchor or "")
            if cost is not None:
                charge(*cost, event)
            elif any(anchor == event.anchor for anchor, _, _ in open_collections):
                raise LimitError(event.start_mark, f"alias *{_short(event.anchor)} is inside the node it names")
            # an undefined alias: the composer says so


def _short(anchor: str | None) -> str:
    text = anchor or ""
    return text if len(text) <= 20 else text[:19] + "…"
