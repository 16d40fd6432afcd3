"""JSON encoding for the wire: one orjson call per message, its size limit, and clear errors.

This is the only module that knows how Python values become Tracking API JSON. orjson already
writes datetime, date, time, UUID, Enum, dataclasses, tuples and numpy-free numbers natively;
the default hook adds Decimal (written as an exact JSON number), set and frozenset. Anything
else is refused with a `InvalidMessageType` that names the key where the value sits, found by a
second, slow walk that only runs when encoding has already failed.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping
from typing import Any, Final

import orjson

from trackline.errors import InvalidMessage, InvalidMessageType, MessageTooLarge
from trackline.wire import MAX_MESSAGE_BYTES

_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
# A message is encoded with a trailing newline that a slice then cuts off: see encode_message.
# OPT_NON_STR_KEYS nearly doubles orjson's time for every dict, so a message is first encoded
# without it, and again with it only when that failed (a dict with an int key, say).
_FAST_MESSAGE_OPTIONS: Final = orjson.OPT_APPEND_NEWLINE
_MESSAGE_OPTIONS: Final = _OPTIONS | orjson.OPT_APPEND_NEWLINE


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        if value.is_finite():
            # A Fragment is written verbatim, so 39.95 stays 39.95 instead of a binary float.
            return orjson.Fragment(str(value))
        return None
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Encode one message; raise a `MessageError` naming the offending field or the size."""
    try:
        data = orjson.dumps(message, default=_default, option=_FAST_MESSAGE_OPTIONS)
    except orjson.JSONEncodeError:
        try:
            data = orjson.dumps(message, default=_default, option=_MESSAGE_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _explain(message, exc) from None
    size = len(data) - 1
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            "message", f"is {size} bytes once encoded; the limit is {MAX_MESSAGE_BYTES} bytes"
        )
    # orjson hands back its working buffer, at least 4 KB whatever the length; a queued
    # message must cost its length, or max_queue_bytes would bound ten times less than it says.
    # Slicing off the newline copies into an object of exactly the right size, at a quarter of
    # the cost of bytes(memoryview(data)).
    return data[:-1]


def dumps(value: Any) -> bytes:
    """Encode any JSON value with the same rules as messages (no size limit)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text."""
    return orjson.loads(data)


def _explain(message: Mapping[str, Any], exc: Exception) -> Exception:
    """Find where in `message` encoding failed, to name the field in the error."""
    path, problem, kind = _find_problem(message, "", 0)
    if path is None:
        return InvalidMessage("message", f"cannot be encoded as JSON ({exc})")
    field = path.lstrip(".")
    if kind == "type":
        return InvalidMessageType(field, problem)
    return InvalidMessage(field, problem)


_MAX_DEPTH: Final = 200


def _find_problem(value: Any, path: str, depth: int) -> tuple[str | None, str, str]:
    """Walk `value` like orjson does and describe the first thing it cannot encode."""
    if depth > _MAX_DEPTH:
        return path or "message", f"is nested deeper than {_MAX_DEPTH} levels", "value"
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
            return path, f"integer {value} does not fit in 64 bits", "value"
        return None, "", ""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, "contains a lone surrogate, which is not valid UTF-8", "value"
        return None, "", ""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return (
                    f"{path}.{key!r}",
                    f"has a key of type {type(key).__name__}; keys must be strings",
                    "type",
                )
            found = _find_problem(item, f"{path}.{key}", depth + 1)
            if found[0] is not None:
                return found
        return None, "", ""
    if isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            found = _find_problem(item, f"{path}[{index}]", depth + 1)
            if found[0] is not None:
                return found
        return None, "", ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _find_problem(dataclasses.asdict(value), path, depth)
    try:
        orjson.dumps(value, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return (
            path,
            f"value of type {type(value).__name__} cannot be encoded as JSON; "
            "convert it to str, int, float, bool, a list or a dict",
            "type",
        )
    return None, "", ""
