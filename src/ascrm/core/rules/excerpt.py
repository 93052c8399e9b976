"""Short excerpts of values for error messages: never the whole of a big or aliased value."""

from __future__ import annotations

from typing import Any

EXCERPT_CHARS = 40


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A repr-like text of value cut to about limit characters, built without walking the rest."""
    parts: list[str] = []
    budget = limit + 1

    def emit(text: str) -> None:
        nonlocal budget
        parts.append(text[:budget])
        budget -= len(parts[-1])

    def walk(item: Any) -> None:
        if budget <= 0:
            return
        if isinstance(item, dict):
            emit("{")
            for n, (key, inner) in enumerate(item.items()):
                if budget <= 0:
                    return
                emit(", " if n else "")
                walk(key)
                emit(": ")
                walk(inner)
            emit("}")
        elif isinstance(item, (list, tuple)):
            emit("[")
            for n, inner in enumerate(item):
                if budget <= 0:
                    return
                emit(", " if n else "")
                walk(inner)
            emit("]")
        elif isinstance(item, str):
            emit(repr(item[:budget]) if len(item) > budget else repr(item))
        elif isinstance(item, (int, float, bool)) or item is None:
            emit(repr(item))
        else:
            emit(f"<{type(item).__name__}>")

    walk(value)
    text = "".join(parts)
    return text if budget > 0 else text[: limit - 1] + "…"


def clip(message: str, limit: int = 400) -> str:
    """message cut to limit characters (the last one an ellipsis)."""
    return message if len(message) <= limit else message[: limit - 1] + "…"
