"""A web request reduced to what analytics needs, and the context it gives every call inside it.

Built from a WSGI environ (`from_environ`) or an ASGI scope (`from_scope`), so the WSGI, ASGI,
Django and Flask integrations describe a request the same way: `request_context` turns it into
the `context.ip`, `userAgent`, `locale` and `page` (url, path, search, referrer) that analytics.js
would have sent from the browser.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from trackline.context import Scope
from trackline.integrations.proxies import TrustedProxies

#: Characters a path keeps unescaped: RFC 3986 `pchar` plus `/` (unreserved ones never are).
_PATH_SAFE = "/:@!$&'()*+,;="
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """One request as the browser made it, with trusted proxies' forwarding already applied.

    `path` is percent-encoded and includes the prefix the app is mounted under; `query` is
    the raw query string without `?`; `ip` is the client's address when known; `headers` has
    lower-case names.
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str
    ip: str | None
    headers: Mapping[str, str]

    @property
    def url(self) -> str:
        """The full URL, as the browser's address bar showed it."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.host}{self.path}{query}"

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies by name.

        Parsed leniently, as browsers send them and as Django does: one malformed cookie
        (which `http.cookies` would stop at) costs only itself.
        """
        cookies: dict[str, str] = {}
        for chunk in self.headers.get("cookie", "").split(";"):
            name, equals, value = chunk.partition("=")
            name, value = name.strip(), value.strip()
            if not equals or not name:
                continue
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.setdefault(name, value)
        return cookies


def build(
    proxies: TrustedProxies,
    *,
    method: str,
    scheme: str,
    server: tuple[str, object] | None,
    path: str,
    query: str,
    peer: str | None,
    headers: Mapping[str, str],
) -> RequestInfo:
    """A `RequestInfo`, taking scheme, host and client address from the `X-Forwarded-*` headers
    when (and only when) the connection comes from a trusted proxy.

    The host is the `Host` header's, else the `server` (name, port) the request arrived on,
    with the port left out when it is the scheme's default.
    """
    host = headers.get("host")
    if not host:
        name, port = server or ("localhost", None)
        plain = port is None or str(port) in ("", _DEFAULT_PORTS.get(scheme))
        host = name if plain else f"{name}:{port}"
    if proxies.peer_is_trusted(peer):
        scheme = _last(headers.get("x-forwarded-proto")) or scheme
        host = _last(headers.get("x-forwarded-host")) or host
    return RequestInfo(
        method=method,
        scheme=scheme.lower(),
        host=host,
        path=path or "/",
        query=query,
        ip=proxies.client_ip(peer, headers.get("x-forwarded-for")),
        headers=headers,
    )


def from_environ(
    environ: Mapping[str, Any],
    proxies: TrustedProxies,
    *,
    scheme: str | None = None,
    path: str | None = None,
) -> RequestInfo:
    """Describe a WSGI request (PEP 3333 environ; Django's `request.META` is one too).

    `scheme` and `path` (decoded, with the mount prefix) replace the environ's when the
    framework knows them better: Django under ASGI has no `wsgi.url_scheme`, and its
    `PATH_INFO` is real text rather than PEP 3333's bytes-as-latin-1.
    """
    scheme = scheme or str(environ.get("wsgi.url_scheme") or "http")
    if path is None:
        path = quote_path(environ.get("SCRIPT_NAME", "")) + quote_path(environ.get("PATH_INFO", ""))
    else:
        path = urllib.parse.quote(path, safe=_PATH_SAFE)
    return build(
        proxies,
        method=str(environ.get("REQUEST_METHOD", "GET")),
        scheme=scheme,
        server=(str(environ.get("SERVER_NAME", "localhost")), environ.get("SERVER_PORT")),
        path=path,
        query=str(environ.get("QUERY_STRING", "")),
        peer=environ.get("REMOTE_ADDR") or None,
        headers=headers_from_environ(environ),
    )


def from_scope(scope: Mapping[str, Any], proxies: TrustedProxies) -> RequestInfo:
    """Describe an ASGI `http` or `websocket` connection."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    scheme = str(scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http"))
    raw_path = scope.get("raw_path")
    if raw_path:
        # Already percent-encoded as the client sent it; quoting again only escapes stray bytes.
        path = urllib.parse.quote(raw_path, safe=_PATH_SAFE + "%")
    else:
        root, path = scope.get("root_path", ""), scope.get("path", "")
        path = quote_path(path if path.startswith(root) else root + path)
    client = scope.get("client")
    return build(
        proxies,
        method=str(scope.get("method", "GET")),
        scheme=scheme,
        server=(str(server[0]), server[1]) if (server := scope.get("server")) else None,
        path=path,
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        peer=str(client[0]) if client else None,
        headers=headers,
    )


def headers_from_environ(environ: Mapping[str, Any]) -> dict[str, str]:
    """The HTTP headers of a WSGI environ (its `HTTP_*` keys), with lower-case names."""
    return {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }


def quote_path(path: str) -> str:
    """Percent-encode a decoded path.

    A WSGI path holds the raw bytes as latin-1 characters (PEP 3333), so they go back to bytes
    that way; a path that cannot (a real Unicode path, as Django under ASGI gives) is UTF-8.
    """
    try:
        raw = path.encode("latin-1")
    except UnicodeEncodeError:
        raw = path.encode("utf-8")
    return urllib.parse.quote(raw, safe=_PATH_SAFE)


def request_context(request: RequestInfo) -> dict[str, Any]:
    """The context keys a request gives the calls made while it is handled."""
    context: dict[str, Any] = {}
    if request.ip:
        context["ip"] = request.ip
    user_agent = request.headers.get("user-agent")
    if user_agent:
        context["userAgent"] = user_agent
    locale = preferred_locale(request.headers.get("accept-language"))
    if locale:
        context["locale"] = locale
    context["page"] = page_properties(request)
    return context


def request_scope(request: RequestInfo, *, browser_anonymous_id: bool = True) -> dict[str, Any]:
    """What `context.enter` takes for a request: its context and, with `browser_anonymous_id`,
    the anonymous id analytics.js keeps for this browser, for calls that name none."""
    values = request_context(request)
    anonymous_id = cookie_id(request.cookies.get("ajs_anonymous_id"))
    if browser_anonymous_id and anonymous_id:
        return Scope(values, anonymous_id)
    return values


def cookie_id(value: str | None) -> str | None:
    """An id from an analytics.js cookie, which may hold it URL-encoded and JSON-quoted."""
    if not value:
        return None
    value = urllib.parse.unquote(value)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return None
        return decoded if isinstance(decoded, str) and decoded else None
    return value


def page_properties(request: RequestInfo) -> dict[str, str]:
    """`url`, `path`, and when present `search` (with its `?`) and `referrer`, as analytics.js
    names them."""
    page = {"path": request.path, "url": request.url}
    if request.query:
        page["search"] = f"?{request.query}"
    referrer = request.headers.get("referer")
    if referrer:
        page["referrer"] = referrer
    return page


def preferred_locale(accept_language: str | None) -> str | None:
    """The language the client prefers most (highest `q`, first on a tie), such as `en-US`.

    Wildcards, refused languages (`q=0`) and malformed entries are skipped.
    """
    if not accept_language:
        return None
    best: str | None = None
    best_q = 0.0
    for entry in accept_language.split(","):
        tag, _, params = entry.partition(";")
        tag = tag.strip()
        if not _LANGUAGE_TAG.fullmatch(tag):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if q > best_q:
            best, best_q = tag, q
    return best


def _last(header: str | None) -> str | None:
    """The right-most value of a comma-separated header: the one the nearest proxy set."""
    if not header:
        return None
    return header.rsplit(",", 1)[-1].strip() or None
