"""`trackline send TYPE`: send one message from a shell, synchronously, and print its id.

```sh
trackline send track --user-id 019mr8mf4r --event "Item Purchased" \
    --properties '{"revenue": 39.95}'
```

The message goes out before the command returns (a `sync=True` client, with the usual retries
inside `--timeout`). The exit status says what happened: 0 delivered, 1 not delivered (the
reason on stderr), 2 a mistake on the command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Final

from trackline.cli._common import (
    EXIT_NOT_DELIVERED,
    EXIT_OK,
    EXIT_USAGE,
    add_destination_options,
    describe_config_error,
    fail,
    positive_seconds,
)
from trackline.client import Client
from trackline.errors import ConfigError, DeliveryError, MessageError
from trackline.replay import replay as replay_message
from trackline.replay import wire_name
from trackline.wire import TYPES_IN_ORDER

#: Options that belong to some message types only: option name -> the types it applies to.
TYPE_OPTIONS: Final = {
    "event": ("track",),
    "name": ("page", "screen"),
    "category": ("page", "screen"),
    "properties": ("track", "page", "screen"),
    "traits": ("identify", "group"),
    "group_id": ("group",),
    "previous_id": ("alias",),
}
#: Options that take a JSON object.
JSON_OPTIONS: Final = ("properties", "traits", "context", "integrations")
COMMON_OPTIONS: Final = ("user_id", "anonymous_id", "context", "integrations", "timestamp")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `trackline send` to the command line."""
    parser = subparsers.add_parser(
        "send",
        help="send one message synchronously and print its id",
        description="Send one message (identify, track, page, screen, group or alias) and "
        "wait for the server's answer. Prints the message id; exits 1 if it was not delivered.",
    )
    parser.add_argument(
        "type", choices=TYPES_IN_ORDER, metavar="TYPE", help=" | ".join(TYPES_IN_ORDER)
    )
    add_destination_options(parser)
    parser.add_argument(
        "--user-id", metavar="ID", help="the user's id (alias: the new id); this or --anonymous-id"
    )
    parser.add_argument(
        "--anonymous-id", metavar="ID", help="an id for a user not known yet; this or --user-id"
    )
    parser.add_argument("--event", help="track: the event name")
    parser.add_argument("--name", help="page, screen: the page or screen name")
    parser.add_argument("--category", help="page, screen: the category")
    parser.add_argument("--group-id", metavar="ID", help="group: the group's id")
    parser.add_argument("--previous-id", metavar="ID", help="alias: the previous id")
    for option in JSON_OPTIONS:
        parser.add_argument(f"--{option}", metavar="JSON", help="a JSON object")
    parser.add_argument("--timestamp", metavar="ISO8601", help="when it happened (default: now)")
    parser.add_argument("--message-id", metavar="ID", help="your own unique message id")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long, retries included (default: 30)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Send the message; returns the exit status."""
    try:
        message = build_message(args)
    except ValueError as exc:
        return fail("send", str(exc), EXIT_USAGE)
    errors: list[DeliveryError] = []
    try:
        client = Client(
            args.write_key,
            host=args.host,
            sync=True,
            timeout=min(args.timeout, 10.0),
            delivery_timeout=args.timeout,
            on_error=lambda error, _messages: errors.append(error),
        )
    except ConfigError as exc:
        return fail("send", describe_config_error(exc), EXIT_USAGE)
    try:
        message_id = replay_message(client, message)
    except MessageError as exc:
        return fail("send", f"--{exc.field.replace('_', '-')}: {exc.problem}", EXIT_USAGE)
    finally:
        client.shutdown(timeout=1.0)
    if message_id is None:
        reason = str(errors[0]) if errors else "dropped"
        return fail("send", f"not delivered: {reason}", EXIT_NOT_DELIVERED)
    print(message_id)
    return EXIT_OK


def build_message(args: argparse.Namespace) -> dict[str, Any]:
    """The wire message the options describe; ValueError names a misplaced or bad option."""
    message: dict[str, Any] = {"type": args.type}
    for option, types in TYPE_OPTIONS.items():
        value = getattr(args, option)
        if value is not None and args.type not in types:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to {args.type}")
    for option in (*COMMON_OPTIONS, *TYPE_OPTIONS, "message_id"):
        value = getattr(args, option)
        if value is None:
            continue
        if option in JSON_OPTIONS:
            value = _json_object(option, value)
        message[wire_name(option)] = value
    return message


def _json_object(option: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--{option}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{option}: must be a JSON object, not {type(value).__name__}")
    return value
