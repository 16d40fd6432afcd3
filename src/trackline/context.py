"""Context that applies to every call made in a scope, such as one web request.

Stored in a `contextvars.ContextVar`, so it follows threads and asyncio tasks correctly: each
request handled by a web server sees only its own. Every client merges it into the `context` of
the messages it builds, under the call's own `context`, which wins key by key.

```python
with trackline.context(ip="12.212.12.49", userAgent="Mozilla/5.0"):
    trackline.track("019mr8mf4r", "Item Purchased")   # carries context.ip and userAgent
```
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "trackline_context", default=None
)


def current() -> Mapping[str, Any] | None:
    """The context in scope, or None outside any `context()` block."""
    return _current.get()


@contextlib.contextmanager
def context(values: Mapping[str, Any] | None = None, /, **more: Any) -> Iterator[Mapping[str, Any]]:
    """Add context keys for the calls made inside the block; nested blocks add to outer ones."""
    merged = {**(_current.get() or {}), **(values or {}), **more}
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)
