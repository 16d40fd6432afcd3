"""WSGI middleware: every trackline call made while a request is handled carries its context.

```python
from trackline.integrations.wsgi import TracklineMiddleware

application = TracklineMiddleware(application, trusted_proxies=["10.0.0.0/8"])
```

The context stays in scope until the server closes the response, so events tracked while a
streamed body is generated carry it too. With `page_views=True` a `page` call is made for each
response the filter accepts, when the server closes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from trackline.context import Token, enter, leave
from trackline.integrations import Middleware
from trackline.integrations.pages import PageView, PageViews
from trackline.integrations.request import RequestInfo, from_environ, request_context

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


class TracklineMiddleware(Middleware[WSGIApplication]):
    """Wrap a WSGI application so its requests give context to every trackline call.

    Options (`trusted_proxies`, `page_views`, `page_filter`, `client`): see `Middleware`.
    """

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = from_environ(environ, self._proxies)
        token = enter(request_context(request))
        response = _Response(token, request, self._pages)
        try:
            response.body = self.app(
                environ, response.wrap(start_response) if self._pages.enabled else start_response
            )
        except BaseException:
            leave(token)
            raise
        return response


class _Response:
    """The app's response body, ending the request's context scope when the server closes it."""

    def __init__(self, token: Token, request: RequestInfo, pages: PageViews) -> None:
        self.body: Iterable[bytes] = ()
        self._token = token
        self._request = request
        self._pages = pages
        self._status: int | None = None
        self._content_type: str | None = None

    def wrap(self, start_response: StartResponse) -> StartResponse:
        def start(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: ExcInfo | None = None,
            /,
        ) -> Callable[[bytes], object]:
            self._status = _status_code(status)
            self._content_type = next(
                (value for name, value in headers if name.lower() == "content-type"), None
            )
            return start_response(status, headers, exc_info)

        return start

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            try:
                if self._status is not None:
                    self._pages.record(PageView(self._request, self._status, self._content_type))
            finally:
                leave(self._token)


def _status_code(status: str) -> int | None:
    try:
        return int(status.split(None, 1)[0])
    except (ValueError, IndexError):
        return None
