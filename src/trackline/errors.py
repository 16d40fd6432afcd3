"""trackline's exceptions, grouped by how the caller recovers.

```
TracklineError
 ├── ConfigError(ValueError)            an option of Client/init is wrong: fix the code
 ├── MessageError                       a call's arguments cannot make a valid message: fix the call
 │    ├── InvalidMessage(ValueError)    a field is missing or has a wrong value
 │    │    └── MessageTooLarge          the encoded message is over the 32 KB wire limit
 │    └── InvalidMessageType(TypeError) a field has a wrong type, or a value cannot be JSON
 └── DeliveryError                      never raised: handed to `on_error` with the dropped messages
```

Only programmer errors are raised, and only from the call that made them, so a message that was
accepted earlier is never lost because of a later bad one. Everything that goes wrong on the way
to the server is a `DeliveryError` value passed to callbacks and counted in `Client.stats`.
"""

from __future__ import annotations


class TracklineError(Exception):
    """Base of every exception trackline defines."""


class ConfigError(TracklineError, ValueError):
    """An option given to `Client` or `init` is invalid; `option` names it."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")


class MessageError(TracklineError):
    """A call's arguments cannot make a valid message; `field` names the argument or key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidMessage(MessageError, ValueError):
    """A field is missing or has a value the Tracking API does not accept."""


class MessageTooLarge(InvalidMessage):
    """The message is over the per-message size limit once encoded."""


class InvalidMessageType(MessageError, TypeError):
    """A field has the wrong type, or a value inside it cannot be turned into JSON."""


class DeliveryError(TracklineError):
    """Why messages were dropped: passed to `on_error`, never raised into the app.

    `reason` is one of `trackline.DropReason`; `status` is the HTTP status of the last answer
    when there was one; `detail` is a short human-readable explanation.
    """

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.status = status
        where = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{reason}{where}: {detail}")
