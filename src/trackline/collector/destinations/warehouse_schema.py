"""Segment's warehouse layout as pure functions: which tables a message becomes rows of, the
columns of those rows, and the column types, with no database in sight.

- `tracks`, `identifies`, `pages`, `screens`, `groups`, `aliases`: one row per call; `users`:
  one row per user id with the latest traits; one table per track event name (snake_case),
  with the event's properties as columns.
- Names go to snake_case (`Item Purchased` -> `item_purchased`, `orderId` -> `order_id`).
  Nested objects are flattened with `_` (`context.library.name` -> `context_library_name`),
  arrays are kept as JSON text, null values make no column. A property or trait whose name is
  one of the table's own columns is kept as `properties_<name>` / `traits_<name>`; an event
  whose table name is taken by a standard table gets a leading `_` (`_users`).
- Types are inferred from the first value a column sees: booleans `boolean`, numbers
  `numeric`, ISO 8601 timestamps `timestamptz`, the rest `text`. A later value that does not
  fit its column is left out of the row and kept in the `discards` table, never lost silently.
- `id` (the messageId) is every table's primary key (`users`: the user id), so a message
  loaded twice is stored once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

#: PostgreSQL's longest identifier.
MAX_NAME: Final = 63
TEXT: Final = "text"
NUMERIC: Final = "numeric"
BOOLEAN: Final = "boolean"
TIMESTAMP: Final = "timestamp with time zone"
#: SQL for each type name above (the names are what information_schema reports).
SQL_TYPES: Final = {TEXT: "text", NUMERIC: "numeric", BOOLEAN: "boolean", TIMESTAMP: "timestamptz"}

STANDARD_TABLES: Final = frozenset(
    {"tracks", "identifies", "users", "pages", "screens", "groups", "aliases", "discards"}
)
TABLE_OF_TYPE: Final = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
#: Columns every call table has, with their types.
COMMON_COLUMNS: Final = {
    "id": TEXT,
    "received_at": TIMESTAMP,
    "sent_at": TIMESTAMP,
    "timestamp": TIMESTAMP,
    "original_timestamp": TIMESTAMP,
    "user_id": TEXT,
    "anonymous_id": TEXT,
}
#: Fixed columns by table, beyond the common ones (`users` has its own set).
OWN_COLUMNS: Final = {
    "tracks": {"event": TEXT, "event_text": TEXT},
    "identifies": {},
    "pages": {"name": TEXT, "category": TEXT},
    "screens": {"name": TEXT, "category": TEXT},
    "groups": {"group_id": TEXT},
    "aliases": {"previous_id": TEXT},
}
USERS_COLUMNS: Final = {"id": TEXT, "received_at": TIMESTAMP}
#: Columns the collector itself wrote in its one stored form (`...T14:00:00.000Z`): they fit
#: their `timestamptz` column without being checked again.
STORED_TIMESTAMPS: Final = frozenset({"received_at", "sent_at", "timestamp", "original_timestamp"})
DISCARDS_COLUMNS: Final = {
    "row_id": TEXT,
    "table_name": TEXT,
    "column_name": TEXT,
    "column_type": TEXT,
    "value": TEXT,
    "received_at": TIMESTAMP,
}
_TIMESTAMP_SHAPE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_LOWER_UPPER: Final = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM: Final = re.compile(r"([A-Z]+)([A-Z][a-z])")
_OTHER: Final = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=8192)
def snake(name: str) -> str:
    """A warehouse name for `name`: snake_case, `[a-z0-9_]`, not starting with a digit, at
    most 63 characters."""
    text = _ACRONYM.sub(r"\1_\2", _LOWER_UPPER.sub(r"\1_\2", name)).lower()
    text = _OTHER.sub("_", text).strip("_") or "_"
    if text[0].isdigit():
        text = "_" + text
    return text[:MAX_NAME]


def event_table(event: str) -> str:
    """The table of track event `event`."""
    name = snake(event)
    return "_" + name[: MAX_NAME - 1] if name in STANDARD_TABLES else name


def _is_timestamp(value: str) -> bool:
    if not _TIMESTAMP_SHAPE.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return False
    return True


def infer(value: Any) -> str:
    """The column type a first value gives its column."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int | float):
        return NUMERIC
    if isinstance(value, str) and _is_timestamp(value):
        return TIMESTAMP
    return TEXT


_NO_FIT: Final = object()


def coerce(value: Any, column_type: str) -> Any:
    """`value` as its column stores it, or `_NO_FIT` when it does not fit (a discard)."""
    if column_type == TEXT:
        if isinstance(value, str):
            return value.replace("\x00", "")
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return orjson.dumps(value).decode()
        return orjson.dumps(value).decode().replace("\\u0000", "")
    if column_type == NUMERIC:
        if isinstance(value, bool):
            return _NO_FIT
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                Decimal(value)
            except InvalidOperation:
                return _NO_FIT
            return value
        return _NO_FIT
    if column_type == BOOLEAN:
        return value if isinstance(value, bool) else _NO_FIT
    if column_type == TIMESTAMP:
        return value if isinstance(value, str) and _is_timestamp(value) else _NO_FIT
    return _NO_FIT


def fits(value: Any) -> bool:
    """Whether a coerced value is storable (not a discard)."""
    return value is not _NO_FIT


@functools.lru_cache(maxsize=8192)
def _column(prefix: str, key: str) -> str:
    return snake(f"{prefix}_{key}" if prefix else str(key))


def flatten(prefix: str, value: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(column, value) pairs of a nested object: objects flattened with `_`, arrays as JSON
    text, nulls left out."""
    for key, item in value.items():
        column = _column(prefix, key)
        if item is None:
            continue
        if isinstance(item, dict):
            yield from flatten(column, item)
        elif isinstance(item, list):
            yield column, orjson.dumps(item).decode()
        else:
            yield column, item


@dataclasses.dataclass(frozen=True, slots=True)
class TableRow:
    """One row for one table: values by column, and the types of its fixed columns."""

    table: str
    values: dict[str, Any]
    fixed: Mapping[str, str]


def _own(row: dict[str, Any], fixed: Mapping[str, str], prefix: str, data: Any) -> None:
    """Add a message's properties or traits to `row`, renaming the ones that collide."""
    if not isinstance(data, dict):
        return
    for column, value in flatten("", data):
        name = column if column not in fixed and column not in row else snake(f"{prefix}_{column}")
        row.setdefault(name, value)


def rows(message: Mapping[str, Any]) -> list[TableRow]:
    """The rows one stored message becomes."""
    kind = message.get("type")
    table = TABLE_OF_TYPE.get(str(kind))
    if table is None:
        return []
    fixed = {**COMMON_COLUMNS, **OWN_COLUMNS[table]}
    base: dict[str, Any] = {
        "id": message.get("messageId"),
        "received_at": message.get("receivedAt"),
        "sent_at": message.get("sentAt"),
        "timestamp": message.get("timestamp"),
        "original_timestamp": message.get("originalTimestamp"),
        "user_id": message.get("userId"),
        "anonymous_id": message.get("anonymousId"),
    }
    context = message.get("context")
    if isinstance(context, dict):
        base.update(flatten("context", context))
    result: list[TableRow] = []
    if kind == "track":
        event = str(message.get("event"))
        base.update(event=snake(event), event_text=event)
        result.append(TableRow("tracks", dict(base), fixed))
        own = dict(base)
        _own(own, fixed, "properties", message.get("properties"))
        result.append(TableRow(event_table(event), own, fixed))
        return _clean(result)
    row = dict(base)
    if kind in ("page", "screen"):
        row.update(name=message.get("name"), category=message.get("category"))
        _own(row, fixed, "properties", message.get("properties"))
    elif kind == "group":
        row["group_id"] = message.get("groupId")
        _own(row, fixed, "traits", message.get("traits"))
    elif kind == "alias":
        row["previous_id"] = message.get("previousId")
    else:  # identify
        _own(row, fixed, "traits", message.get("traits"))
        user_id = message.get("userId")
        if user_id:
            user: dict[str, Any] = {"id": user_id, "received_at": message.get("receivedAt")}
            _own(user, USERS_COLUMNS, "traits", message.get("traits"))
            result.append(TableRow("users", user, USERS_COLUMNS))
    result.insert(0, TableRow(table, row, fixed))
    return _clean(result)


def _clean(result: list[TableRow]) -> list[TableRow]:
    for row in result:
        for column in [c for c, v in row.values.items() if v is None]:
            del row.values[column]
    return result
