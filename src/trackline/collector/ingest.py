"""Turn a Tracking API request body into rows to store: read under limits, decode, validate
each message, enrich it. Pure functions and values, no I/O, so every rule is testable alone.

A whole request is refused (`RequestRejected`) only when nothing in it can be trusted: a body
over the size limit, bytes that are not JSON, an envelope of the wrong shape. Anything wrong
with one message rejects that message alone (`Rejection`), so one bad event never costs the
rest of its batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import orjson

# The wire's limits, message types and timestamp rules are the client's too.
from trackline.wire import MAX_BATCH_MESSAGES as MAX_BATCH_MESSAGES
from trackline.wire import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from trackline.wire import MAX_MESSAGE_ID_CHARS as MAX_MESSAGE_ID_CHARS
from trackline.wire import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES
from trackline.wire import MESSAGE_TYPES as MESSAGE_TYPES
from trackline.wire import format_timestamp as format_timestamp
from trackline.wire import has_written_layout
from trackline.wire import parse_timestamp as parse_timestamp

#: analytics.js posts one message to `/v1/` + the first letter of its type.
SHORT_TYPES: Final = {kind[0]: kind for kind in MESSAGE_TYPES}
# `integrations` is not checked here: a malformed one is stored and routed nowhere (see
# trackline.collector.destinations.routing), as Segment and RudderStack read it.
_OBJECT_FIELDS: Final = ("properties", "traits", "context")
_STRING_FIELDS: Final = (
    "userId",
    "anonymousId",
    "event",
    "name",
    "category",
    "groupId",
    "previousId",
)
#: The fields whose value goes to an indexed column too (see `Row`: `event` or `name` by the
#: type), where `GET /api/events`'s filters look. PostgreSQL's `text` cannot hold NUL, so on
#: every store a NUL in one of them rejects its message, whatever its type; anywhere else a
#: NUL is kept, escaped in the stored JSON as `\u0000`.
INDEXED_FIELDS: Final = ("messageId", "userId", "anonymousId", "event", "name")
#: The end of the error for a NUL where no store can hold one: after a field or parameter name.
NO_NUL: Final = "must not contain the NUL character (U+0000)"
_BACKSLASH: Final = ord("\\")


class RequestRejected(Exception):
    """The whole request is refused with `status`; `code` and `message` go in the JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected(
        413, "body_too_large", f"the request body is over {limit} bytes (after decompression)"
    )


def is_gzip(content_encoding: str | None) -> bool:
    """Whether the body is gzip; raises 415 for an encoding the collector cannot read."""
    value = (content_encoding or "").strip().lower()
    if value in ("", "identity"):
        return False
    if value in ("gzip", "x-gzip"):
        return True
    raise RequestRejected(
        415, "unsupported_encoding", f"Content-Encoding {value!r} is not supported: send gzip"
    )


class BodyReader:
    """Collects a request body chunk by chunk and stops as soon as it passes the limit.

    gzip is inflated as it arrives, never more than the bytes still allowed at a time
    (`max_length`), so a small compressed bomb is cut off after `limit` bytes with flat memory.
    The compressed bytes are capped at the same limit: a stream of empty deflate blocks would
    otherwise be endless while inflating to nothing.
    """

    def __init__(self, *, gzip: bool, limit: int = MAX_REQUEST_BYTES) -> None:
        self._limit = limit
        self._received = 0
        self._size = 0
        self._parts: list[bytes] = []
        self._inflater: Any = zlib.decompressobj(wbits=31) if gzip else None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk; raises 413 past the limit and 400 on corrupt gzip."""
        self._received += len(chunk)
        if self._received > self._limit:
            raise _too_large(self._limit)
        if self._inflater is None:
            self._size = self._received
            self._parts.append(chunk)
            return
        data = chunk
        try:
            while data:
                if self._inflater.eof:
                    # Concatenated gzip members are valid gzip (RFC 1952 2.2).
                    self._inflater = zlib.decompressobj(wbits=31)
                out = self._inflater.decompress(data, self._limit - self._size + 1)
                self._size += len(out)
                if self._size > self._limit:
                    raise _too_large(self._limit)
                self._parts.append(out)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error:
            raise RequestRejected(400, "invalid_gzip", "the gzip body is corrupt") from None

    def finish(self) -> bytes:
        """The whole (inflated) body; raises 400 when a gzip stream stopped in the middle."""
        if self._inflater is not None and self._received and not self._inflater.eof:
            raise RequestRejected(400, "invalid_gzip", "the gzip body is truncated")
        return b"".join(self._parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded request: its messages (not yet validated) and the fields around them."""

    messages: list[Any]
    write_key: str | None = None
    sent_at: datetime | None = None
    context: Mapping[str, Any] | None = None
    integrations: Mapping[str, Any] | None = None
    #: The type a single-message route (`/v1/track`, ...) implies; None for batches.
    route_type: str | None = None


class _Unrepresentable:
    """Stands in for a JSON number no double can hold, so the message carrying it is rejected."""


def _parse_float(text: str) -> float | _Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else _Unrepresentable()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_json(body: bytes) -> Any:
    """Decode a body; raises 400 `invalid_json` naming the problem.

    orjson refuses lone surrogates and numbers beyond a double for the whole document. The
    standard parser accepts them, so the body is decoded again with it: a message holding such
    a value is then rejected alone when it is encoded, instead of its whole batch.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(body, parse_float=_parse_float, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            where = f" (line {first.lineno}, column {first.colno})" if first.lineno else ""
            raise RequestRejected(400, "invalid_json", f"the body is not JSON{where}") from None


def _envelope_field(body: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = body.get(name)
    if value is None or isinstance(value, dict):
        return value
    raise RequestRejected(400, "invalid_field", f"{name} must be an object")


def _envelope_sent_at(body: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_timestamp(body.get("sentAt"))
    except ValueError as exc:
        raise RequestRejected(400, "invalid_timestamp", f"sentAt: {exc}") from None


def _envelope_write_key(body: Mapping[str, Any]) -> str | None:
    key = body.get("writeKey")
    return key if isinstance(key, str) else None


def parse_batch(body: bytes) -> Envelope:
    """Decode a `/v1/batch` (or `/v1/import`) body: `{"batch": [...], "sentAt": ..., ...}`."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise RequestRejected(400, "not_an_object", "the body must be a JSON object")
    messages = document.get("batch")
    if not isinstance(messages, list):
        raise RequestRejected(400, "batch_not_a_list", '"batch" must be a list of messages')
    if len(messages) > MAX_BATCH_MESSAGES:
        raise RequestRejected(
            400,
            "too_many_messages",
            f"a batch holds at most {MAX_BATCH_MESSAGES} messages, this one has {len(messages)}",
        )
    return Envelope(
        messages=messages,
        write_key=_envelope_write_key(document),
        sent_at=_envelope_sent_at(document),
        context=_envelope_field(document, "context"),
        integrations=_envelope_field(document, "integrations"),
    )


def parse_single(body: bytes, route_type: str) -> Envelope:
    """Decode a single-message body (`/v1/track`, ...): the message itself, with `writeKey`."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise RequestRejected(400, "not_an_object", "the body must be a JSON object")
    return Envelope(
        messages=[document], write_key=_envelope_write_key(document), route_type=route_type
    )


class Row(NamedTuple):
    """One message ready to store: the indexed columns, then the enriched message's JSON."""

    message_id: str
    type: str
    user_id: str | None
    anonymous_id: str | None
    #: The track event's name, or the page or screen name: what the event was about.
    event: str | None
    #: The key id of the write key the message came with (see `access.key_id`), never the key.
    source: str
    received_at: str
    timestamp: str
    body: str


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why the message at `index` of the request was not stored."""

    index: int
    code: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Processed:
    """The outcome of validating a request's messages: rows to store and rejections, and
    when `process` was given a `route`, each row's destinations (`routes[i]` for `rows[i]`)."""

    rows: list[Row]
    rejections: list[Rejection]
    routes: list[tuple[str, ...] | None] | None = None


#: Chooses a message's destinations from its type and its (merged) `integrations`; None when
#: `integrations` is malformed.
RouteFunction = Callable[[str, Any], tuple[str, ...] | None]


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _nonempty(message: Mapping[str, Any], field: str) -> bool:
    value = message.get(field)
    return isinstance(value, str) and value != ""


#: The type each checked field must have when present: one pass over a message's own keys
#: (a handful) instead of a lookup per rule. `_check` names the first rule broken.
_FIELD_TYPES: Final[dict[str, type]] = {
    **dict.fromkeys(_STRING_FIELDS, str),
    **dict.fromkeys(_OBJECT_FIELDS, dict),
}


def _fields_ok(message: dict[str, Any]) -> bool:
    """Whether every checked field of `message` that is present has its type."""
    for field, value in message.items():
        kind = _FIELD_TYPES.get(field)
        if kind is not None and value is not None and not isinstance(value, kind):
            return False
    return True


def _check(message: Any, route_type: str | None) -> str:
    """The message's type; raises `_Invalid` for the first rule the message breaks."""
    if not isinstance(message, dict):
        raise _Invalid("not_an_object", "a message must be a JSON object")
    kind = message.get("type")
    if route_type is not None:
        if kind is None:
            kind = route_type
        elif kind != route_type:
            raise _Invalid("invalid_type", f"type {kind!r} sent to the {route_type} endpoint")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise _Invalid("invalid_type", f"type must be one of {sorted(MESSAGE_TYPES)}, not {kind!r}")
    if not _fields_ok(message):
        # The slow path, for the error only: the first field of the table that is wrong.
        for field, wanted in _FIELD_TYPES.items():
            value = message.get(field)
            if value is not None and not isinstance(value, wanted):
                what = "a string" if wanted is str else "an object"
                raise _Invalid("invalid_field", f"{field} must be {what}")
    if kind == "alias":
        if not _nonempty(message, "previousId"):
            raise _Invalid("missing_previous_id", "an alias needs previousId")
        if not _nonempty(message, "userId"):
            raise _Invalid("missing_user_id", "an alias needs userId")
    elif not (message.get("userId") or message.get("anonymousId")):
        # Both are strings or None by now: truthy is non-empty.
        raise _Invalid("no_user_anon_id", "a message needs userId or anonymousId")
    if kind == "track" and not message.get("event"):
        raise _Invalid("missing_event", "a track message needs a non-empty event")
    if kind == "group" and not message.get("groupId"):
        raise _Invalid("missing_group_id", "a group message needs groupId")
    message_id = message.get("messageId")
    if message_id is not None and (
        not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID_CHARS
    ):
        raise _Invalid(
            "invalid_message_id",
            f"messageId must be a non-empty string under {MAX_MESSAGE_ID_CHARS + 1} characters",
        )
    return kind


def _nul_field(message: Mapping[str, Any]) -> str:
    """The first of `INDEXED_FIELDS` whose value holds a NUL, for a message known to have
    one; their values are strings or None by now (`_check`)."""
    for field in INDEXED_FIELDS:
        value = message.get(field)
        if value and "\x00" in value:
            return field
    raise AssertionError("no indexed field holds a NUL")


def _merged(outer: Mapping[str, Any] | None, inner: Any) -> Any:
    if not outer:
        return inner
    if inner is not None and not isinstance(inner, dict):
        return inner  # malformed: kept as sent, so it routes nowhere
    return {**outer, **inner} if inner else dict(outer)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    """What every message of one request shares, worked out once."""

    envelope: Envelope
    source: str
    received_at: datetime
    received: str
    sent: str | None
    #: receivedAt - sentAt: the client's clock error, added to each message's own timestamp.
    skew: timedelta | None
    #: The sender's address, for `context.ip` when the message has none.
    ip: str | None
    #: `YYYY-MM-DDTHH:MM:SS` (UTC) of each second since the epoch formatted in this request:
    #: a batch's timestamps share a few seconds, and formatting a datetime whole is the
    #: dearest step of enriching a message.
    seconds: dict[int, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, envelope: Envelope, source: str, received_at: datetime, ip: str | None) -> _Request:
        sent_at = envelope.sent_at
        return cls(
            envelope,
            source,
            received_at,
            format_timestamp(received_at),
            None if sent_at is None else format_timestamp(sent_at),
            None if sent_at is None else received_at - sent_at,
            ip,
        )

    def stamp(self, moment: datetime) -> str:
        """`format_timestamp(moment)`, the same text and the same errors, mostly from cache."""
        since = moment - _EPOCH
        second = since.days * 86_400 + since.seconds
        head = self.seconds.get(second)
        if head is None:
            # The same second in UTC formats the same up to its milliseconds.
            head = self.seconds[second] = format_timestamp(moment)[:19]
        return f"{head}.{since.microseconds // 1000:03d}Z"


def _enrich(message: Any, request: _Request) -> Row:
    """Validate `message` and build its row; raises `_Invalid`."""
    envelope = request.envelope
    kind = _check(message, envelope.route_type)
    text = message.get("timestamp")
    own_sent = message.get("sentAt")
    try:
        original = None if text is None else parse_timestamp(text)
        own_sent_at = None if own_sent is None else parse_timestamp(own_sent)
    except ValueError as exc:
        raise _Invalid("invalid_timestamp", str(exc)) from None
    sent, skew = request.sent, request.skew
    if own_sent_at is not None:
        sent, skew = format_timestamp(own_sent_at), request.received_at - own_sent_at
    enriched = dict(message)
    enriched.pop("writeKey", None)
    enriched["type"] = kind
    message_id = message.get("messageId") or str(uuid.uuid4())
    enriched["messageId"] = message_id
    if envelope.context:
        enriched["context"] = _merged(envelope.context, message.get("context"))
    if envelope.integrations:
        enriched["integrations"] = _merged(envelope.integrations, message.get("integrations"))
    if request.ip is not None:
        context = enriched.get("context") or {}
        if not context.get("ip"):
            enriched["context"] = {**context, "ip": request.ip}
    if original is None:
        stamp = request.received
    else:
        if not has_written_layout(text):
            text = request.stamp(original)
        enriched["originalTimestamp"] = text
        # Segment's clock skew correction: receivedAt - (sentAt - originalTimestamp).
        try:
            stamp = request.stamp(original if skew is None else original + skew)
        except OverflowError:
            stamp = request.stamp(original)
    if sent is not None:
        enriched["sentAt"] = sent
    enriched["timestamp"] = stamp
    enriched["receivedAt"] = request.received
    try:
        body = orjson.dumps(enriched)
    except (orjson.JSONEncodeError, TypeError):
        raise _Invalid(
            "invalid_value",
            "a value cannot be stored as JSON (an unpaired surrogate, or a number no double holds)",
        ) from None
    user_id = message.get("userId") or None
    anonymous_id = message.get("anonymousId") or None
    event = message.get("event") or None
    name = message.get("name") or None
    # JSON writes a NUL as `\u0000`, so a stored form with no backslash, as most are, holds
    # none: the common message pays one byte search (a byte as an int: the quickest), one
    # with a backslash a look at the values in hand, and only one with a NUL the table walk.
    if _BACKSLASH in body and (
        "\x00" in message_id
        or (user_id is not None and "\x00" in user_id)
        or (anonymous_id is not None and "\x00" in anonymous_id)
        or (event is not None and "\x00" in event)
        or (name is not None and "\x00" in name)
    ):
        raise _Invalid("invalid_field", f"{_nul_field(message)} {NO_NUL}")
    # Enrichment only adds to a message (writeKey aside), so a stored form within the limit
    # proves the message as sent was within it; only a large one is measured again.
    if len(body) > MAX_MESSAGE_BYTES:
        sent_form = {key: value for key, value in message.items() if key != "writeKey"}
        if len(orjson.dumps(sent_form)) > MAX_MESSAGE_BYTES:
            raise _Invalid("message_too_large", f"the message is over {MAX_MESSAGE_BYTES} bytes")
    # Positional, past NamedTuple's Python-level __new__: this runs once per message.
    return _new_row(
        Row,
        (
            message_id,
            kind,
            user_id,
            anonymous_id,
            event if kind == "track" else name,
            request.source,
            request.received,
            stamp,
            body.decode(),
        ),
    )


_new_row: Final = tuple.__new__


def process(
    envelope: Envelope,
    *,
    source: str,
    received_at: datetime,
    ip: str | None = None,
    route: RouteFunction | None = None,
) -> Processed:
    """Validate and enrich every message of a request, keeping their order. With `ip` (the
    sender's address), a message whose `context` has no `ip` gets this one, as Segment does
    for browser events. With `route`, also choose each stored message's destinations."""
    request = _Request.of(envelope, source, received_at, ip)
    rows: list[Row] = []
    rejections: list[Rejection] = []
    routes: list[tuple[str, ...] | None] | None = None if route is None else []
    for index, message in enumerate(envelope.messages):
        try:
            rows.append(_enrich(message, request))
        except _Invalid as exc:
            rejections.append(Rejection(index, exc.code, exc.message))
            continue
        if routes is not None:
            assert route is not None
            integrations = message.get("integrations")
            if envelope.integrations:
                integrations = _merged(envelope.integrations, integrations)
            routes.append(route(rows[-1].type, integrations))
    return Processed(rows, rejections, routes)
