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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "trackline_context", default=None
)


#: The context in scope, or None outside any `context()` block. It is the variable's own `get`,
#: not a function around it: every message reads it, and a Python frame costs a few percent of
#: a `track()` call.
current: Callable[[], Mapping[str, Any] | None] = _current.get


Token = contextvars.Token[Mapping[str, Any] | None]


def enter(values: Mapping[str, Any]) -> Token:
    """Add `values` to the context in scope until `leave(token)`.

    For scopes that a `with` block cannot span, such as a WSGI response body that the server
    iterates after the application returned.
    """
    return _current.set({**(_current.get() or {}), **values})


def leave(token: Token) -> None:
    """End the scope `enter` opened, restoring the context that was in scope before it.

    Works from another `contextvars.Context` too (a server closing a response elsewhere), where
    `ContextVar.reset` would refuse the token.
    """
    try:
        _current.reset(token)
    except ValueError:
        previous = token.old_value
        _current.set(None if previous is contextvars.Token.MISSING else previous)


@contextlib.contextmanager
def context(values: Mapping[str, Any] | None = None, /, **more: Any) -> Iterator[Mapping[str, Any]]:
    """Add context keys for the calls made inside the block; nested blocks add to outer ones."""
    token = enter({**(values or {}), **more})
    try:
        yield _current.get() or {}
    finally:
        leave(token)
