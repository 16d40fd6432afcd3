"""The debugger page: serves the page and its script and style sheet from package data.

The page is plain HTML, CSS and JavaScript with no build step; it reads the collector's own
read API and live stream, so it needs nothing from the internet. Its Content-Security-Policy
allows scripts, styles and requests from this collector only: even a value that slipped into
the page as markup could neither run a script nor reach another origin.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The page's only inline resource is its data: favicon; everything else comes from here.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_MEDIA_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _asset(name: str) -> bytes:
    return importlib.resources.files(__name__).joinpath(name).read_bytes()


async def _serve(request: Request, *, body: bytes, media_type: str, page: bool) -> Response:
    headers = dict(_HEADERS)
    if page:
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return Response(body, headers=headers, media_type=media_type)


def routes() -> list[Route]:
    """`GET /` and `/debugger` (the page), `/debugger/app.js` and `/debugger/style.css`.

    The files are read once, here: they are small and never change while the collector runs.
    """
    served = {name: _asset(name) for name in _MEDIA_TYPES}

    def route(path: str, name: str) -> Route:
        endpoint = functools.partial(
            _serve,
            body=served[name],
            media_type=_MEDIA_TYPES[name],
            page=name == "index.html",
        )
        return Route(path, endpoint, methods=["GET"])

    return [
        route("/", "index.html"),
        route("/debugger", "index.html"),
        route("/debugger/app.js", "app.js"),
        route("/debugger/style.css", "style.css"),
    ]
