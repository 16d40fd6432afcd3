"""trackline: server-side analytics events, batched and delivered to a Segment-compatible API.

```python
import trackline

trackline.init("WRITE_KEY")
trackline.track("019mr8mf4r", "Item Purchased", {"revenue": 39.95})
trackline.flush()
```
"""

from __future__ import annotations

import logging

from trackline._default import (
    alias,
    flush,
    get_client,
    group,
    identify,
    init,
    page,
    screen,
    shutdown,
    track,
)
from trackline._version import __version__
from trackline.client import Client
from trackline.config import ErrorCallback, SuccessCallback
from trackline.context import context
from trackline.errors import (
    ConfigError,
    DeliveryError,
    InvalidMessage,
    InvalidMessageType,
    MessageError,
    MessageTooLarge,
    TracklineError,
)
from trackline.short_lived import flushing
from trackline.stats import DropReason, Stats

logging.getLogger("trackline").addHandler(logging.NullHandler())

#: Settings of the default client, read when the first module-level call creates it.
write_key: str | None = None
host: str | None = None
on_error: ErrorCallback | None = None
on_success: SuccessCallback | None = None
sync: bool | None = None
send: bool | None = None

__all__ = [
    "Client",
    "ConfigError",
    "DeliveryError",
    "DropReason",
    "InvalidMessage",
    "InvalidMessageType",
    "MessageError",
    "MessageTooLarge",
    "Stats",
    "TracklineError",
    "__version__",
    "alias",
    "context",
    "flush",
    "flushing",
    "get_client",
    "group",
    "identify",
    "init",
    "page",
    "screen",
    "shutdown",
    "track",
]
