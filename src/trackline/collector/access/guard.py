"""The collector's outer layer, run before routing: refuses a `Host` the collector does not
answer to, works out who is asking (`Caller`), and adds the headers every answer carries.

It is pure ASGI (no per-request middleware objects), so the ingest path pays a few
microseconds for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackline.collector.access.hosts import Hosts, host_name
from trackline.collector.access.network import Clients
from trackline.collector.access.origins import own_origin
from trackline.integrations.request import RequestInfo, from_scope

_SCOPE_KEY: Final = "trackline.caller"
_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
_NO_STORE: Final = (b"cache-control", b"no-store")


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: as the browser addressed it (`request`: scheme and host forwarded
    by trusted proxies only, lower-case headers, cookies), the client's address (`client`, None
    when unknown) and the TCP peer's."""

    request: RequestInfo
    client: str | None
    peer: str | None

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    @property
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
        request = from_scope(scope, self.clients.proxies)
        peer = _peer(scope)
        if not self.hosts.allows(request.host):
            await _refuse_host(send, request.host)
            return
        scope[_SCOPE_KEY] = Caller(request, self.clients.address(peer, request.headers), peer)
        path: str = scope.get("path", "")
        extra = (_NOSNIFF, _NO_STORE) if path.startswith("/api/") else (_NOSNIFF,)
        await self.app(scope, receive, _with_headers(send, extra))


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
