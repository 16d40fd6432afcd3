"""Turn a Tracking API message (the camelCase wire format) back into a `Client` call.

The reverse of `messages.build`: historical imports and tools that hold stored messages replay
them through an ordinary client, so they get the same validation, batching and retries as live
calls. The message's own `messageId` and `timestamp` are kept, which makes a replay idempotent
on a server that dedupes by message id, and keeps the time the event really happened.

Fields the server sets (`receivedAt`, `sentAt`, `originalTimestamp` when `timestamp` is there,
`writeKey`, `version`, ...) are ignored; `context.library` is replaced by trackline's own, as
for every message the client sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from trackline.client import Client
from trackline.errors import InvalidMessage, InvalidMessageType
from trackline.wire import MESSAGE_TYPES, TYPES_IN_ORDER

#: Python argument names of the message fields whose wire name differs.
WIRE_NAMES: Final = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
    "message_id": "messageId",
}


def wire_name(field: str) -> str:
    """The wire key of a call argument (`user_id` -> `userId`); other names are unchanged."""
    return WIRE_NAMES.get(field, field)


def replay(client: Client, message: Mapping[str, Any]) -> str | None:
    """Send `message` through the `client` call of its `type`; returns what the call returns.

    Raises `InvalidMessage` / `InvalidMessageType` naming the field when the message is not a
    valid Spec message, exactly as the call itself would.
    """
    if not isinstance(message, Mapping):
        raise InvalidMessageType("message", f"must be a JSON object, not {type(message).__name__}")
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        expected = ", ".join(TYPES_IN_ORDER)
        raise InvalidMessage("type", f"must be one of {expected}, not {kind!r}")
    timestamp = message.get("timestamp")
    if timestamp is None:
        timestamp = message.get("originalTimestamp")
    common: dict[str, Any] = {
        "context": message.get("context"),
        "integrations": message.get("integrations"),
        "timestamp": timestamp,
        "message_id": message.get("messageId"),
    }
    user_id = message.get("userId")
    anonymous_id = message.get("anonymousId")
    if kind == "alias":
        return client.alias(message.get("previousId"), user_id, anonymous_id=anonymous_id, **common)
    common["anonymous_id"] = anonymous_id
    if kind == "track":
        return client.track(user_id, message.get("event"), message.get("properties"), **common)
    if kind == "identify":
        return client.identify(user_id, message.get("traits"), **common)
    if kind == "group":
        return client.group(user_id, message.get("groupId"), message.get("traits"), **common)
    call = client.page if kind == "page" else client.screen
    return call(
        user_id,
        message.get("name"),
        message.get("properties"),
        category=message.get("category"),
        **common,
    )
