"""Build and validate Tracking API messages from call arguments: pure functions, no I/O.

Each builder returns `(message_id, encoded_bytes)`. The message dict lives only as long as the
encode call, so the caller's dicts are read once and never kept or changed: a caller may mutate
its `properties` right after `track()` returns without touching what will be sent.

Speed matters here because it runs on the caller's thread for every event. A uuid4 costs more
than everything else in this module together, so message ids come from a per-process random
prefix and a counter (regenerated after `fork()`), handed out from blocks formatted a few
thousand at a time; the timestamp is formatted once per millisecond; and the common call (no
per-call context, ids given as strings) takes a path without helper calls.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from trackline import wire
from trackline._version import __version__
from trackline.context import Scope
from trackline.encoding import encode_message
from trackline.errors import InvalidMessage, InvalidMessageType
from trackline.wire import MAX_MESSAGE_ID_CHARS

LIBRARY: Final = {"name": "trackline", "version": __version__}
_LIBRARY_CONTEXT: Final = {"library": LIBRARY}

Timestamp = dt.datetime | dt.date | str


#: The last three hex digits of an id, in counting order: a block shares everything else.
_LOW_DIGITS: Final = tuple(f"{n:03x}" for n in range(4096))


class _MessageIds:
    """UUID-shaped unique ids: 80 random bits per process, then a 48-bit counter.

    Formatting one id costs more than the rest of a call's bookkeeping, so ids are made 4096 at
    a time (one shared head, 4096 fixed tails) and popped one by one. `list.pop` is atomic, so
    threads take distinct ids without a lock; only refilling takes one.
    """

    def __init__(self) -> None:
        self._refill_lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        raw = int.from_bytes(os.urandom(10), "big")
        hexed = f"{raw:020x}"
        # Version and variant nibbles make the id a well-formed UUID string for tools that check.
        self._prefix = f"{hexed[0:8]}-{hexed[8:12]}-4{hexed[13:16]}-a{hexed[17:20]}-"
        self._blocks = itertools.count()
        self._pool: list[str] = []
        self._refill_lock = threading.Lock()  # a lock held by another thread at fork is lost

    def next(self) -> str:
        try:
            return self._pool.pop()
        except IndexError:
            return self._refill()

    def _refill(self) -> str:
        with self._refill_lock:
            pool = self._pool
            if not pool:
                block = next(self._blocks)
                if block >= 1 << 36:  # pragma: no cover - 2.8e14 messages from one process
                    self.reset()
                    block = next(self._blocks)
                head = f"{self._prefix}{block:09x}"
                pool = [head + low for low in reversed(_LOW_DIGITS)]
                self._pool = pool
            return pool.pop()


_ids = _MessageIds()
os.register_at_fork(after_in_child=_ids.reset)
_next_id = _ids.next


def new_message_id() -> str:
    """A fresh message id, unique across processes and forks."""
    return _ids.next()


_second_cache: tuple[int, str] = (-1, "")
# One tuple, replaced whole, so a thread never pairs one millisecond with another's text.
_millisecond_cache: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds, e.g. `2026-11-28T14:00:07.123Z`."""
    global _millisecond_cache
    millisecond = time.time_ns() // 1_000_000
    cached = _millisecond_cache
    if cached[0] == millisecond:
        return cached[1]
    second, fraction = divmod(millisecond, 1000)
    text = f"{_format_second(second)}.{fraction:03d}Z"
    _millisecond_cache = (millisecond, text)
    return text


def format_epoch(now: float) -> str:
    """A POSIX time as UTC ISO-8601 with milliseconds; the second is formatted once per second."""
    second = int(now)
    return f"{_format_second(second)}.{int((now - second) * 1000):03d}Z"


def _format_second(second: int) -> str:
    global _second_cache
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return prefix


def format_timestamp(value: Timestamp, field: str = "timestamp") -> str:
    """A call's timestamp on the wire: UTC ISO-8601 with milliseconds.

    A string without an offset is UTC, as on the wire; a naive datetime (or a date, its
    midnight) is local time, as Python reads it (see `trackline.wire`).
    """
    try:
        if isinstance(value, str):
            if wire.is_canonical_timestamp(value):
                return value
            moment = wire.parse_timestamp(value)
            assert moment is not None
        elif isinstance(value, dt.date):
            moment = wire.from_python(value)
        else:
            raise InvalidMessageType(
                field,
                f"must be a datetime, a date or an ISO-8601 string, not {type(value).__name__}",
            )
        return wire.format_timestamp(moment)
    except (OverflowError, OSError) as exc:
        raise InvalidMessage(field, f"{value!r} cannot be converted to UTC ({exc})") from None
    except ValueError as exc:
        if isinstance(value, str):
            raise InvalidMessage(field, f"{value!r} is not an ISO-8601 date and time") from None
        raise InvalidMessage(field, f"{value!r} cannot be converted to UTC ({exc})") from None


def _identifier(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidMessageType(field, f"must be a string or an integer, not {type(value).__name__}")


def _mapping(value: object, field: str) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidMessageType(field, f"must be a mapping (dict), not {type(value).__name__}")


def _text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidMessageType(field, f"must be a string, not {type(value).__name__}")


def build(
    kind: str,
    fields: dict[str, Any],
    user_id: object,
    anonymous_id: object,
    context: object,
    integrations: object,
    timestamp: Timestamp | None,
    message_id: object,
    base_context: Mapping[str, Any] | None = None,
) -> tuple[str, bytes]:
    """Assemble, validate and encode one message of type `kind` with its type-specific `fields`.

    `fields` holds wire keys already checked by the caller (event, name, traits...), without
    `None` values: the `*_fields` functions below make it. `base_context` is context that
    applies to every call in scope (a web request's ip and user agent, for example); the call's
    own `context` wins key by key. A scope that names an anonymous id (a `Scope`) gives it to
    a call that names none.
    """
    uid = user_id if user_id.__class__ is str and user_id else _identifier(user_id, "user_id")
    anon = None if anonymous_id is None else _identifier(anonymous_id, "anonymous_id")
    if anon is None and isinstance(base_context, Scope):
        anon = base_context.anonymous_id
    if uid is None and anon is None:
        raise InvalidMessage("user_id", "either user_id or anonymous_id is required")
    mid = _next_id() if message_id is None else _message_id(message_id)
    message: dict[str, Any] = {
        "type": kind,
        "messageId": mid,
        "timestamp": now_iso() if timestamp is None else format_timestamp(timestamp),
    }
    if uid is not None:
        message["userId"] = uid
    if anon is not None:
        message["anonymousId"] = anon
    message.update(fields)
    if context is None and base_context is None:
        message["context"] = _LIBRARY_CONTEXT
    else:
        message["context"] = _full_context(_mapping(context, "context"), base_context)
    if integrations is not None:
        message["integrations"] = _mapping(integrations, "integrations")
    return mid, encode_message(message)


def build_track(
    user_id: object,
    event: object,
    properties: object,
    anonymous_id: object,
    context: object,
    integrations: object,
    timestamp: Timestamp | None,
    message_id: object,
    base_context: Mapping[str, Any] | None = None,
) -> tuple[str, bytes]:
    """`build` for a track call. Most calls an app makes are this one with a string user id,
    an event name, a dict of properties and nothing else, so that case skips the general
    path's helper calls and intermediate dict; every other case goes through `build`."""
    if (
        base_context is None
        and user_id.__class__ is str
        and user_id
        and event.__class__ is str
        and event
        and properties.__class__ is dict
        and anonymous_id is None
        and context is None
        and integrations is None
        and timestamp is None
        and message_id is None
    ):
        mid = _next_id()
        message = {
            "type": "track",
            "messageId": mid,
            "timestamp": now_iso(),
            "userId": user_id,
            "event": event,
            "properties": properties,
            "context": _LIBRARY_CONTEXT,
        }
        return mid, encode_message(message)
    return build(
        "track",
        track_fields(event, properties),
        user_id,
        anonymous_id,
        context,
        integrations,
        timestamp,
        message_id,
        base_context,
    )


def _message_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidMessageType("message_id", f"must be a string, not {type(value).__name__}")
    if not value or len(value) > MAX_MESSAGE_ID_CHARS:
        raise InvalidMessage("message_id", f"must be 1 to {MAX_MESSAGE_ID_CHARS} characters long")
    return value


def _full_context(
    own: Mapping[str, Any] | None, base: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    if own is None and base is None:
        return _LIBRARY_CONTEXT
    if base is None or own is None:
        return {**(base or own or {}), "library": LIBRARY}
    return _merge_context(base, own)


def _merge_context(base: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The call's context over the scope's, one level deep: `{"page": {"title": ...}}` from a
    call adds a title to the request's page instead of replacing its url and path."""
    merged = {**base}
    for key, value in own.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = {**below, **value}
        else:
            merged[key] = value
    merged["library"] = LIBRARY
    return merged


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def track_fields(event: object, properties: object) -> dict[str, Any]:
    """Wire fields of a track call."""
    if event is None or event == "":
        raise InvalidMessage("event", "track requires a non-empty event name")
    name = event if event.__class__ is str else _text(event, "event")
    if properties is None:
        return {"event": name}
    if properties.__class__ is not dict:
        properties = _mapping(properties, "properties")
    return {"event": name, "properties": properties}


def identify_fields(traits: object) -> dict[str, Any]:
    """Wire fields of an identify call."""
    return _present(traits=_mapping(traits, "traits"))


def page_fields(name: object, category: object, properties: object) -> dict[str, Any]:
    """Wire fields of a page or screen call."""
    return _present(
        name=_text(name, "name"),
        category=_text(category, "category"),
        properties=_mapping(properties, "properties"),
    )


def group_fields(group_id: object, traits: object) -> dict[str, Any]:
    """Wire fields of a group call."""
    gid = _identifier(group_id, "group_id")
    if gid is None:
        raise InvalidMessage("group_id", "group requires a group_id")
    return _present(groupId=gid, traits=_mapping(traits, "traits"))


def alias_fields(previous_id: object) -> dict[str, Any]:
    """Wire fields of an alias call (its user_id is checked by `build`)."""
    pid = _identifier(previous_id, "previous_id")
    if pid is None:
        raise InvalidMessage("previous_id", "alias requires a previous_id")
    return {"previousId": pid}
