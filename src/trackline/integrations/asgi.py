"""Pure ASGI middleware: every trackline call made while a request is handled carries its context.

```python
from starlette.applications import Starlette
from starlette.middleware import Middleware
from trackline.integrations.asgi import TracklineMiddleware

app = Starlette(routes=..., middleware=[Middleware(TracklineMiddleware, page_views=True)])
```

Works with any ASGI 3 app (Starlette, FastAPI, Django's ASGI handler): the context is set in the
task that runs the app, and Starlette hands it on to sync endpoints run in its thread pool and
to background tasks. `http` and `websocket` connections get context; page calls are made only
for `http` responses, once the app has finished sending them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from trackline.context import enter, leave
from trackline.integrations import Middleware
from trackline.integrations.pages import PageView
from trackline.integrations.request import from_scope, request_scope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TracklineMiddleware(Middleware[ASGIApp]):
    """Wrap an ASGI application so its requests give context to every trackline call.

    Options (`trusted_proxies`, `page_views`, `page_filter`, `client`,
    `browser_anonymous_id`): see `Middleware`.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = from_scope(scope, self._proxies)
        token = enter(request_scope(request, browser_anonymous_id=self._browser_anonymous_id))
        try:
            if not self._pages.enabled or scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            started: list[Message] = []

            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start":
                    started.append(message)
                await send(message)

            await self.app(scope, receive, watch)
            if started:
                start = started[0]
                content_type = next(
                    (
                        value.decode("latin-1")
                        for name, value in start.get("headers") or ()
                        if name.lower() == b"content-type"
                    ),
                    None,
                )
                self._pages.record(PageView(request, int(start["status"]), content_type))
        finally:
            leave(token)
