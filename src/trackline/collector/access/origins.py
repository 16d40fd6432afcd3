"""Which web origins may change data: the defence against cross-site requests.

Any page a developer visits can make the browser send a `text/plain` POST (no preflight) or a
form to the collector on 127.0.0.1. Browsers name the page's origin in the `Origin` header of
every such request, so a request that changes data (ingest, clearing, logging in) is refused
when it names an origin that is neither the collector's own nor one the user allowed with
`--allow-origin`. A request without `Origin` comes from a program, not a page (a browser that
sends `Sec-Fetch-Site: cross-site` or `same-site` without it is refused all the same).

`Origins` is the one policy: the collector's checks use it, and so does CORS for the browser
routes. `*` lets every page send events (the collector logs a warning); it never opens the actions
that are for the collector's own page and the user's own apps (clearing the store, logging in).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from trackline.errors import ConfigError

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOST: Final = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?)$")
#: What `Sec-Fetch-Site` says about a request a page on another origin made.
_FOREIGN_FETCH: Final = frozenset({"cross-site", "same-site"})


def normalise_origin(origin: str) -> str | None:
    """`origin` as a browser serialises it (`scheme://host[:port]`, lower case, no default
    port), or None when it is not an http(s) origin (`null`, a path, garbage)."""
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.match(host):
        return None
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origin(scheme: str, host: str) -> str | None:
    """The origin of the collector as the requesting page sees it, from the request's scheme
    and `Host` (as forwarded by a trusted proxy)."""
    return normalise_origin(f"{scheme}://{host}")


class Origins:
    """The origins allowed to change data besides the collector's own (`--allow-origin`)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        if isinstance(allowed, str):
            raise ConfigError("allow_origins", "must be a list of origins, not one string")
        origins: set[str] = set()
        self.any = False
        for entry in allowed:
            if entry.strip() == "*":
                self.any = True
                continue
            origin = normalise_origin(entry)
            if origin is None:
                raise ConfigError(
                    "allow_origins",
                    f"{entry!r} is not an origin: give scheme://host[:port], such as "
                    "http://localhost:3000",
                )
            origins.add(origin)
        self._origins = frozenset(origins)

    def __bool__(self) -> bool:
        """Whether any origin besides the collector's own is allowed."""
        return self.any or bool(self._origins)

    def __iter__(self) -> Iterator[str]:
        """The allowed origins named one by one (not `*`), normalised."""
        return iter(sorted(self._origins))

    def allows(self, origin: str, own: str | None, *, admin: bool = False) -> bool:
        """Whether a page on `origin` may make the request: the collector's `own` origin
        always; an allowed one; any when `*` was given, unless the request is an `admin`
        one (clearing, logging in)."""
        normalised = normalise_origin(origin)
        if normalised is None:
            return False
        if normalised == own or normalised in self._origins:
            return True
        return self.any and not admin

    def permits(
        self, headers: Mapping[str, str], own: Callable[[], str | None], *, admin: bool = False
    ) -> bool:
        """Whether a request that changes data, with these (lower-case) headers, may go on;
        `own()` gives the collector's own origin, asked only when the request names one."""
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "").strip().lower() not in _FOREIGN_FETCH
        return self.allows(origin, own(), admin=admin)
