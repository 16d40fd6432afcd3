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
from trackline.integrations.request import RequestInfo, from_environ, request_scope

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


class TracklineMiddleware(Middleware[WSGIApplication]):
    """Wrap a WSGI application so its requests give context to every trackline call.

    Options (`trusted_proxies`, `page_views`, `page_filter`, `client`,
    `browser_anonymous_id`): see `Middleware`.
    """

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = from_environ(environ, self._proxies)
        values = request_scope(request, browser_anonymous_id=self._browser_anonymous_id)
        scope = _Scope(enter(values), request, self._pages)
        try:
            body = self.app(
                environ, scope.watch(start_response) if self._pages.enabled else start_response
            )
        except BaseException:
            leave(scope.token)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(body, list | tuple) or (
            isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
        ):
            # No app code runs while these are sent: end the scope now and hand the body on
            # untouched, so the server can still take its length or send the file directly.
            scope.finish()
            return body
        return _ClosingBody(body, scope)


class _Scope:
    """One request's context scope, and what its response started with."""

    def __init__(self, token: Token, request: RequestInfo, pages: PageViews) -> None:
        self.token = token
        self._request = request
        self._pages = pages
        self._status: int | None = None
        self._content_type: str | None = None

    def watch(self, start_response: StartResponse) -> StartResponse:
        """`start_response`, noting the status and content type for the page filter."""

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

    def finish(self) -> None:
        """Make the page call if one is due, then end the scope."""
        try:
            if self._status is not None:
                self._pages.record(PageView(self._request, self._status, self._content_type))
        finally:
            leave(self.token)


class _ClosingBody:
    """The app's response body, ending the request's scope when the server closes it."""

    def __init__(self, body: Iterable[bytes], scope: _Scope) -> None:
        self._body = body
        self._scope = scope

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._scope.finish()


def _status_code(status: str) -> int | None:
    try:
        return int(status.split(None, 1)[0])
    except (ValueError, IndexError):
        return None
