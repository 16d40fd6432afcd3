"""Stored messages as rows of a fixed-width table: time, type, user, what, details.

Fixed widths, so that rows printed one at a time (`trackline events --follow`) line up with
the rows printed before them; long values are cut with an ellipsis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from trackline.encoding import dumps

#: (title, width) of each column but the last, which takes the rest of the line.
COLUMNS: Final = (("TIME (UTC)", 19), ("TYPE", 8), ("USER", 22), ("EVENT / NAME", 26))
LAST_TITLE: Final = "DETAILS"


def header() -> str:
    """The titles line."""
    return _join([title for title, _ in COLUMNS] + [LAST_TITLE], None)


def row(message: Mapping[str, Any], width: int | None = None) -> str:
    """One message as a line, cut to `width` characters when given."""
    kind = str(message.get("type", "?"))
    cells = [_time(message), kind, _user(message), _what(message), _details(message)]
    return _join(cells, width)


def _join(cells: list[str], width: int | None) -> str:
    parts = [_fit(cell, size).ljust(size) for cell, (_, size) in zip(cells, COLUMNS, strict=False)]
    line = "  ".join([*parts, cells[-1]]).rstrip()
    return _fit(line, width) if width is not None else line


def _fit(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def _time(message: Mapping[str, Any]) -> str:
    stamp = str(message.get("timestamp") or message.get("receivedAt") or "")
    return stamp[:19].replace("T", " ")


def _user(message: Mapping[str, Any]) -> str:
    if message.get("userId") is not None:
        return str(message["userId"])
    if message.get("anonymousId") is not None:
        return f"anon:{message['anonymousId']}"
    return ""


def _what(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    if kind == "track":
        return str(message.get("event", ""))
    if kind in ("page", "screen"):
        parts = [message.get("category"), message.get("name")]
        return " / ".join(str(part) for part in parts if part)
    if kind == "group":
        return str(message.get("groupId", ""))
    if kind == "alias":
        return f"from {message.get('previousId', '')}"
    return ""


def _details(message: Mapping[str, Any]) -> str:
    payload = message.get("properties") or message.get("traits")
    return dumps(payload).decode() if payload else ""
