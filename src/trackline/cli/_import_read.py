"""Reading `trackline import` inputs: JSON Lines or CSV, line by line, into wire messages.

Each record comes out as a `Line` that knows its line number and the byte offset just after
it, so an interrupted import can resume by seeking there. A record that cannot become a message
carries an `error` instead and the reading goes on. A message without a `messageId` gets one
derived from its line number and bytes: resending the same line after a resume gives the same
id, which a deduplicating server stores once.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final

import orjson

#: Namespace of the message ids derived from a line (any fixed UUID would do).
LINE_ID_NAMESPACE: Final = uuid.UUID("6f6e2d1c-7d4a-4a0e-9c61-1f3c2b8e4d57")

#: Wire fields a CSV column maps to by name, in either spelling.
CSV_FIELDS: Final = {
    "type": "type",
    "userId": "userId",
    "user_id": "userId",
    "anonymousId": "anonymousId",
    "anonymous_id": "anonymousId",
    "event": "event",
    "name": "name",
    "category": "category",
    "groupId": "groupId",
    "group_id": "groupId",
    "previousId": "previousId",
    "previous_id": "previousId",
    "timestamp": "timestamp",
    "messageId": "messageId",
    "message_id": "messageId",
}
#: Objects a CSV column may fill one key of, with `--map properties.KEY=COLUMN`.
CSV_OBJECTS: Final = ("properties", "traits", "context", "integrations")
CONVERSIONS: Final = ("string", "number", "bool", "json")
_EXTRA_COLUMNS_GO_TO: Final = {
    "track": "properties",
    "page": "properties",
    "screen": "properties",
    "identify": "traits",
    "group": "traits",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One record of the input: a message, or the reason it is not one."""

    number: int
    """The line it starts on, counting from 1."""
    last: int
    """The line it ends on (a quoted CSV field may span lines)."""
    end: int
    """The byte offset just after it: where a resume continues."""
    message: dict[str, Any] | None = None
    error: str | None = None


def read_jsonl(stream: IO[bytes], line: int = 0, offset: int = 0) -> Iterator[Line]:
    """The messages of a JSON Lines stream positioned after `line` lines and `offset` bytes."""
    for raw in stream:
        line += 1
        offset += len(raw)
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield Line(line, line, offset, error=f"not valid JSON ({exc})")
            continue
        if not isinstance(value, dict):
            yield Line(line, line, offset, error=f"not a JSON object but {_json_kind(value)}")
            continue
        yield Line(line, line, offset, _with_id(value, line, raw))


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """Where one CSV column goes: a wire field path, and how its text is converted."""

    path: tuple[str, ...]
    conversion: str = "string"


class CsvMapping:
    """How CSV rows become messages: `--type`, `--map FIELD=COLUMN[:CONVERSION]`, and what
    becomes of the other columns (properties or traits, unless `only_mapped`)."""

    def __init__(
        self, default_type: str | None, maps: Sequence[str], *, only_mapped: bool = False
    ) -> None:
        self.default_type = default_type
        self.only_mapped = only_mapped
        self.explicit: dict[str, Column] = {}
        for spec in maps:
            column, target = parse_map(spec)
            self.explicit[column] = target

    def bind(self, header: Sequence[str]) -> list[Column | None]:
        """The target of each column of `header`; ValueError names a problem with the mapping."""
        missing = [name for name in self.explicit if name not in header]
        if missing:
            raise ValueError(
                f"--map names column(s) {', '.join(map(repr, missing))} that the header "
                f"lacks; it has {', '.join(map(repr, header))}"
            )
        targets: list[Column | None] = []
        for name in header:
            if name in self.explicit:
                targets.append(self.explicit[name])
            elif name in CSV_FIELDS:
                targets.append(Column((CSV_FIELDS[name],)))
            elif self.only_mapped or not name:
                targets.append(None)
            else:
                targets.append(Column(("*", name)))
        has_type = any(target is not None and target.path == ("type",) for target in targets)
        if not has_type and self.default_type is None:
            raise ValueError("the CSV has no type column: name one with --map or give --type")
        return targets

    def message(self, targets: Sequence[Column | None], row: Sequence[str]) -> dict[str, Any]:
        """The wire message of one row; ValueError names the column that cannot be converted."""
        message: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if self.default_type is not None:
            message["type"] = self.default_type
        for target, text in zip(targets, row, strict=False):
            if target is None or text == "":
                continue
            value = _convert(text, target)
            if target.path[0] == "*":
                extra[target.path[1]] = value
                continue
            place = message
            for key in target.path[:-1]:
                place = place.setdefault(key, {})
            place[target.path[-1]] = value
        destination = _EXTRA_COLUMNS_GO_TO.get(str(message.get("type")))
        if extra and destination is not None:
            message[destination] = {**extra, **message.get(destination, {})}
        return message


def parse_map(spec: str) -> tuple[str, Column]:
    """`FIELD=COLUMN[:CONVERSION]` -> (column, target); ValueError says what is wrong."""
    field, sep, column = spec.partition("=")
    if not sep or not field or not column:
        raise ValueError(f"--map {spec!r}: expected FIELD=COLUMN, e.g. properties.revenue=amount")
    conversion = "string"
    name, colon, suffix = column.rpartition(":")
    if colon and suffix in CONVERSIONS:
        column, conversion = name, suffix
    path = tuple(field.split("."))
    if len(path) == 1 and path[0] in CSV_FIELDS:
        return column, Column((CSV_FIELDS[path[0]],), conversion)
    if len(path) >= 2 and path[0] in CSV_OBJECTS and all(path):
        return column, Column(path, conversion)
    fields = ", ".join(sorted(set(CSV_FIELDS.values())))
    raise ValueError(
        f"--map {spec!r}: {field!r} is not a message field ({fields}) "
        f"or a key of {', '.join(CSV_OBJECTS)} such as properties.revenue"
    )


def read_csv(
    stream: IO[bytes], mapping: CsvMapping, line: int = 0, offset: int = 0
) -> Iterator[Line]:
    """The messages of a CSV stream with a header line. To resume, `stream` must be at the
    start: the header is read, then the stream moves to `offset` (after line `line`).

    The header is read and checked against `mapping` by this call, so a ValueError about the
    mapping comes before any row.
    """
    decoders = [codecs.getincrementaldecoder("utf-8-sig")()]
    position = [0]

    def text_lines() -> Iterator[str]:
        for raw in stream:
            position[0] += len(raw)
            yield decoders[-1].decode(raw)

    reader = csv.reader(text_lines())
    header = next(reader, None)
    if header is None:
        return iter(())
    targets = mapping.bind(header)
    header_lines = reader.line_num
    if offset > position[0]:
        # The csv reader pulls one physical line at a time, so nothing past the header has
        # been read yet and the stream can move under it.
        stream.seek(offset)
        position[0] = offset
        decoders.append(codecs.getincrementaldecoder("utf-8")())
    else:
        line = header_lines

    def rows() -> Iterator[Line]:
        consumed = header_lines
        for row in reader:
            first = line + consumed - header_lines + 1
            consumed = reader.line_num
            last = line + consumed - header_lines
            if not row:
                continue
            try:
                message = mapping.message(targets, row)
            except ValueError as exc:
                yield Line(first, last, position[0], error=str(exc))
                continue
            raw = ",".join(row).encode()
            yield Line(first, last, position[0], _with_id(message, first, raw))

    return rows()


def _convert(text: str, column: Column) -> Any:
    """The value of a cell: text unless the column asks for a number, bool or JSON."""
    if column.conversion == "string":
        return text
    where = ".".join(part for part in column.path if part != "*")
    try:
        if column.conversion == "number":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError("not finite")
            return int(number) if number.is_integer() and "." not in text else number
        if column.conversion == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1"):
                return True
            if lowered in ("false", "no", "0"):
                return False
            raise ValueError("expected true/false, yes/no or 1/0")
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {text!r} is not a {column.conversion} ({exc})") from None


def _with_id(message: dict[str, Any], line: int, raw: bytes) -> dict[str, Any]:
    if "messageId" not in message:
        name = f"{line}\0{raw.decode('utf-8', 'replace')}"
        message["messageId"] = str(uuid.uuid5(LINE_ID_NAMESPACE, name))
    return message


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")
