"""The collector's outer layer, run before routing: refuses a `Host` the collector does not
answer to, works out who is asking (`Caller`), and adds the headers every answer carries.

It is pure ASGI (no per-request middleware objects), so the ingest path pays a few
microseconds for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackline.collector.access.hosts import Hosts, host_name
from trackline.collector.access.network import Clients
from trackline.collector.access.origins import own_origin
from trackline.integrations.proxies import TrustedProxies
from trackline.integrations.request import RequestInfo, from_scope

_SCOPE_KEY: Final = "trackline.caller"
_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
_NO_STORE: Final = (b"cache-control", b"no-store")


class Caller:
    """Who made a request: its headers (lower-case names, repeated ones joined with `, `), the
    client's address (`client`, None when unknown: see `access.network`) and the TCP peer's.

    `request` (the scheme, host and cookies as the browser used them, forwarded by trusted
    proxies only) is worked out on first use: most requests (ingest from a program) never
    need it."""

    __slots__ = ("_proxies", "_request", "_scope", "client", "headers", "peer")

    def __init__(
        self,
        scope: Scope,
        headers: Mapping[str, str],
        client: str | None,
        peer: str | None,
        proxies: TrustedProxies,
    ) -> None:
        self._scope = scope
        self._proxies = proxies
        self._request: RequestInfo | None = None
        self.headers = headers
        self.client = client
        self.peer = peer

    @property
    def request(self) -> RequestInfo:
        if self._request is None:
            self._request = from_scope(self._scope, self._proxies)
        return self._request

    def origin(self) -> str | None:
        """The collector's own origin as this request's page would see it."""
        return own_origin(self.request.scheme, self.request.host)

    @property
    def secure(self) -> bool:
        """Whether the browser reached the collector over https."""
        return self.request.scheme == "https"

    @property
    def address(self) -> str | None:
        """The address limits are counted against: the client's, else the peer's."""
        return self.client or self.peer


def caller(request: Request) -> Caller:
    """The `Caller` the guard worked out for `request`."""
    found = request.scope.get(_SCOPE_KEY)
    if not isinstance(found, Caller):
        raise RuntimeError("the collector's routes run behind its Guard (see create_app)")
    return found


def _with_headers(send: Send, extra: tuple[tuple[bytes, bytes], ...]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers += [header for header in extra if header[0] not in present]
            message = {**message, "headers": headers}
        await send(message)

    return sending


class Guard:
    """ASGI middleware: the Host check, the `Caller`, and `nosniff` (plus `no-store` on the
    API, whose answers hold personal data) on every answer."""

    def __init__(self, app: ASGIApp, *, hosts: Hosts, clients: Clients) -> None:
        self.app = app
        self.hosts = hosts
        self.clients = clients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        peer = _peer(scope)
        proxies = self.clients.proxies
        caller = Caller(scope, headers, self.clients.address(peer, headers), peer, proxies)
        # Behind a trusted proxy the name the browser used is in X-Forwarded-Host.
        host = caller.request.host if proxies.peer_is_trusted(peer) else headers.get("host")
        if not self.hosts.allows(host):
            await _refuse_host(send, host or "")
            return
        scope[_SCOPE_KEY] = caller
        path: str = scope.get("path", "")
        extra = (_NOSNIFF, _NO_STORE) if path.startswith("/api/") else (_NOSNIFF,)
        await self.app(scope, receive, _with_headers(send, extra))


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _peer(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return str(client[0]) if client else None


async def _refuse_host(send: Send, host: str) -> None:
    name = host_name(host)[:100]
    body = orjson.dumps(
        {
            "code": "host_not_allowed",
            "message": f"this collector does not answer to the name {name!r}; if it should, "
            f"start it with --allow-host {name}",
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                _NOSNIFF,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
