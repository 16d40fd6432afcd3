"""The debugger page: serves the page, its script and style sheet, and its login page, from
package data.

The page is plain HTML, CSS and JavaScript with no build step; it reads the collector's own
read API and live stream, so it needs nothing from the internet. Its Content-Security-Policy
allows scripts, styles and requests from this collector only: even a value that slipped into
the page as markup could neither run a script nor reach another origin.

Who may see the page is the collector's read rule (`access.reads`): the app passes it in as
`refusal`. When that asks for the read token, the login page is served in the page's place;
its form posts the token to `/debugger/login` (the app's `login`), which sets the cookie.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: The page's only inline resource is its data: favicon; everything else comes from here.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The login page runs no script at all, and its one form posts to this collector.
LOGIN_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_MEDIA_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a browser sends `Origin: null` with the page's own POSTs (the
    # login form), which the origin check must refuse. The URL still never leaves this origin.
    "Referrer-Policy": "same-origin",
}

Refusal = Callable[[Request], Awaitable[Response | None]]
Endpoint = Callable[[Request], Awaitable[Response]]


def _asset(name: str) -> bytes:
    return importlib.resources.files(__name__).joinpath(name).read_bytes()


@functools.cache
def _login_bodies() -> tuple[bytes, bytes]:
    page = _asset("login.html")
    return page, page.replace(b' role="alert" hidden>', b' role="alert">')


def login_page(*, failed: bool = False) -> Response:
    """The login page (401: the page needs the read token), saying so when a token was
    submitted and was not the one."""
    headers = {**_HEADERS, "Content-Security-Policy": LOGIN_CONTENT_SECURITY_POLICY}
    headers["Cache-Control"] = "no-store"
    body = _login_bodies()[1 if failed else 0]
    return Response(body, 401, headers, "text/html; charset=utf-8")


async def _serve(
    request: Request, *, body: bytes, media_type: str, refusal: Refusal | None
) -> Response:
    if refusal is not None and (refused := await refusal(request)) is not None:
        return refused
    headers = dict(_HEADERS)
    if refusal is not None:
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return Response(body, headers=headers, media_type=media_type)


def routes(refusal: Refusal, login: Endpoint) -> list[Route]:
    """`GET /` and `/debugger` (the page, for those `refusal` lets through),
    `/debugger/app.js` and `/debugger/style.css` (for anyone: they hold no data), and
    `POST /debugger/login` (`login`).

    The files are read once, here: they are small and never change while the collector runs.
    """
    served = {name: _asset(name) for name in _MEDIA_TYPES}

    def route(path: str, name: str) -> Route:
        page = name == "index.html"
        endpoint = functools.partial(
            _serve,
            body=served[name],
            media_type=_MEDIA_TYPES[name],
            refusal=refusal if page else None,
        )
        return Route(path, endpoint, methods=["GET"])

    return [
        route("/", "index.html"),
        route("/debugger", "index.html"),
        route("/debugger/app.js", "app.js"),
        route("/debugger/style.css", "style.css"),
        Route("/debugger/login", login, methods=["POST"]),
    ]
