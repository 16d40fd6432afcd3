"""Context that applies to every call made in a scope, such as one web request.

Stored in a `contextvars.ContextVar`, so it follows threads and asyncio tasks correctly: each
request handled by a web server sees only its own. Every client merges it into the `context` of
the messages it builds, under the call's own `context`, which wins key by key.

```python
with trackline.context(ip="12.212.12.49", userAgent="Mozilla/5.0"):
    trackline.track("019mr8mf4r", "Item Purchased")   # carries context.ip and userAgent
```

A scope can also name the anonymous id of the person it serves (the web integrations take it
from analytics.js's `ajs_anonymous_id` cookie): calls made inside it without their own
`anonymous_id` carry that one, so server and browser events of one visitor join up.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import Any


class Scope(dict[str, Any]):
    """The context in scope, and the anonymous id its calls carry when they name none."""

    __slots__ = ("anonymous_id",)

    def __init__(self, values: Mapping[str, Any], anonymous_id: str | None) -> None:
        super().__init__(values)
        self.anonymous_id = anonymous_id


_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "trackline_context", default=None
)


#: The context in scope, or None outside any `context()` block. It is the variable's own `get`,
#: not a function around it: every message reads it, and a Python frame costs a few percent of
#: a `track()` call.
current: Callable[[], Mapping[str, Any] | None] = _current.get


Token = contextvars.Token[Mapping[str, Any] | None]


def enter(values: Mapping[str, Any], anonymous_id: str | None = None) -> Token:
    """Add `values` to the context in scope until `leave(token)`; with `anonymous_id` (or
    `values` a `Scope` naming one), calls that name none carry it, else the outer scope's.

    For scopes that a `with` block cannot span, such as a WSGI response body that the server
    iterates after the application returned.
    """
    outer = _current.get()
    if anonymous_id is None and isinstance(values, Scope):
        anonymous_id = values.anonymous_id
    if anonymous_id is None and isinstance(outer, Scope):
        anonymous_id = outer.anonymous_id
    merged = {**(outer or {}), **values}
    return _current.set(merged if anonymous_id is None else Scope(merged, anonymous_id))


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
