"""The Tracking API's wire facts, shared by the client and the collector: the message types, the
size limits, the batch body's shape, and what a timestamp means.

Two rules for a time without a zone, one for each side of the API:

- **On the wire** an ISO-8601 string without an offset is UTC, as Segment reads it:
  `2010-01-18T09:00:00` is `2010-01-18T09:00:00Z`. The client sends every timestamp in UTC with
  an explicit `Z`; it and the collector read zoneless strings (imports, other senders) as UTC.
- **In Python** a naive `datetime` is local time, as Python itself reads it
  (`datetime.astimezone()`): what `datetime.now()` returns means now. A `date` is its local
  midnight. Pass an aware datetime (`datetime.now(timezone.utc)`) to leave no doubt.

Every timestamp trackline writes has one form, UTC with milliseconds and `Z`
(`2026-11-28T14:00:07.123Z`), so they sort as strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

#: Every message type of the Spec, in the order the docs list them (for help texts).
TYPES_IN_ORDER: Final = ("identify", "track", "page", "screen", "group", "alias")
#: The same types, for membership and set arithmetic.
MESSAGE_TYPES: Final = frozenset(TYPES_IN_ORDER)

#: Largest encoded message the Tracking API accepts (32 KB).
MAX_MESSAGE_BYTES: Final = 32 * 1024
#: Largest request body a server accepts, counted after gzip inflation: Segment's 500 KB.
MAX_REQUEST_BYTES: Final = 500 * 1024
#: Largest request body the client sends. Staying at 500,000 bytes keeps it under the limit
#: whichever way a server counts a kilobyte.
MAX_BATCH_BYTES: Final = 500_000
#: Most messages one batch request may carry.
MAX_BATCH_MESSAGES: Final = 2500
#: A messageId must be shorter than 100 characters.
MAX_MESSAGE_ID_CHARS: Final = 99
#: Fields each receiver sets for itself: a stored message sent on to another receiver (a
#: relay, an export imported elsewhere) goes without them.
HOP_FIELDS: Final = ("receivedAt", "sentAt")

# -- the batch body: {"batch":[m0,m1,...],"sentAt":"2026-11-28T14:00:07.123Z"} ---------------

BATCH_HEAD: Final = b'{"batch":['
BATCH_MIDDLE: Final = b'],"sentAt":"'
BATCH_END: Final = b'"}'
#: `sentAt` (and every timestamp trackline writes) is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
TIMESTAMP_CHARS: Final = 24
#: Bytes of a batch body around its messages.
ENVELOPE_BYTES: Final = len(BATCH_HEAD) + len(BATCH_MIDDLE) + TIMESTAMP_CHARS + len(BATCH_END)
#: Room for messages in one batch body, each counted with one separator (the last one's
#: stands for nothing, so a batch that fits takes at most MAX_BATCH_BYTES - 1).
BATCH_ROOM: Final = MAX_BATCH_BYTES - ENVELOPE_BYTES


def batch_bytes(message_bytes: int, count: int) -> int:
    """What `count` messages of `message_bytes` in all take of `BATCH_ROOM`."""
    return message_bytes + count


def envelope(joined: bytes | bytearray | memoryview, sent_at: str) -> bytes:
    """A `/v1/batch` request body around messages already joined by `,`."""
    return b"".join((BATCH_HEAD, joined, BATCH_MIDDLE, sent_at.encode(), BATCH_END))


# -- timestamps ------------------------------------------------------------------------------


def parse_timestamp(value: object) -> dt.datetime | None:
    """A wire timestamp (ISO 8601) as an aware datetime, zoneless meaning UTC; None when absent.

    Raises ValueError naming what is wrong.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 string, not {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def has_written_layout(text: str) -> bool:
    """Whether `text` is laid out as `format_timestamp` writes (`2026-11-29T13:05:09.123Z`):
    for a text that parses, that it needs no rewriting."""
    return (
        len(text) == TIMESTAMP_CHARS
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
        and text.isascii()
    )


def is_canonical_timestamp(value: str) -> bool:
    """Whether `value` is a valid timestamp already in the form `format_timestamp` writes, so
    that it can go on the wire as it is.

    Historical imports and replays carry their timestamps in this form; checking the layout
    and letting `fromisoformat` check the numbers costs a fifth of parsing and formatting.
    """
    if not has_written_layout(value):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def from_python(value: dt.datetime | dt.date) -> dt.datetime:
    """A Python datetime or date as an aware datetime: naive ones are local time."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.astimezone()
    return dt.datetime(value.year, value.month, value.day).astimezone()


def format_timestamp(moment: dt.datetime) -> str:
    """An aware datetime in the one form trackline writes: UTC, milliseconds, `Z`.

    Raises OverflowError (or ValueError) when the moment is out of a datetime's range in UTC.
    """
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
