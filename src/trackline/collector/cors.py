"""Cross-origin access for web pages at the origins the user allows (`--allow-origin`).

A page on `http://localhost:3000` that runs analytics.js posts to the collector on another
port: another origin. Its requests carry an `Authorization` header, so the browser first sends
a preflight (`OPTIONS` with `Access-Control-Request-Method`) and sends the request only if the
answer names the page's origin. This middleware answers those preflights, and marks the real
answers, for the allowed origins and only on the routes a browser needs: ingest (POST) and
the analytics.js settings (GET). Every other route never gets a CORS header, so no foreign
page can read from the collector. Credentials are never allowed: the write key travels in the
body or the `Authorization` header, never in a cookie.

It decides what a browser may read or send after a preflight; it does not refuse requests. A
request that needs no preflight (`navigator.sendBeacon` with a text body) reaches the routes
whatever its origin, and refusing those from foreign origins is the job of the collector's
origin policy, `access.Origins`: the same object, so the origins CORS opens are exactly the
origins whose writes are accepted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson

from trackline.collector.access import Origins

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Request headers a page may send: what analytics.js sends (its key as Basic auth, its JSON as
#: text/plain, a retry count), and gzip for other clients.
ALLOWED_HEADERS: Final = "Authorization, Content-Type, Content-Encoding, X-Retry-Count"
#: Answer headers a page may read beyond the safelisted ones: analytics.js honours Retry-After.
EXPOSED_HEADERS: Final = "Retry-After"
#: Seconds a browser may keep a preflight's answer.
MAX_AGE_SECONDS: Final = 600


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class CorsMiddleware:
    """Answers preflights and adds CORS headers for `origins` on the paths `method_of` opens.

    `method_of(path)` is the one method a path is open to cross-origin (`"POST"`, `"GET"`), or
    None for a path that stays closed.
    """

    def __init__(
        self, app: ASGIApp, origins: Origins, method_of: Callable[[str], str | None]
    ) -> None:
        self.app = app
        self.origins = origins
        self.method_of = method_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        method = self.method_of(scope["path"]) if origin else None
        if method is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, send, origin, method)
            return
        if not self._allows(origin):
            await self.app(scope, receive, send)
            return
        marks = [*self._allow(origin), (b"access-control-expose-headers", EXPOSED_HEADERS.encode())]

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *marks]
            await send(message)

        await self.app(scope, receive, marked)

    def _allows(self, origin: str | None) -> bool:
        # The page is on another origin than the collector's (or it would need no CORS).
        return origin is not None and self.origins.allows(origin, None)

    def _allow(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if self.origins.any:
            return [(b"access-control-allow-origin", b"*")]
        # The answer names one origin, so a shared cache must keep one copy per origin.
        return [(b"access-control-allow-origin", str(origin).encode()), (b"vary", b"Origin")]

    async def _preflight(self, scope: Scope, send: Send, origin: str | None, method: str) -> None:
        if not self._allows(origin):
            body = orjson.dumps(
                {
                    "code": "origin_not_allowed",
                    "message": f"pages at {origin} may not use this collector: start it with "
                    f"--allow-origin {origin}",
                }
            )
            headers = [(b"content-type", b"application/json")]
            await _answer(send, 403, headers, body)
            return
        headers = [
            *self._allow(origin),
            (b"access-control-allow-methods", method.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
        ]
        if _header(scope, b"access-control-request-private-network") == "true":
            # Chromium asks before a public page may reach a private address such as 127.0.0.1.
            headers.append((b"access-control-allow-private-network", b"true"))
        await _answer(send, 204, headers, b"")


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
