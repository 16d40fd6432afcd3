"""Django middleware: request context for every trackline call, configured from settings.

```python
# settings.py
MIDDLEWARE = ["trackline.integrations.django.TracklineMiddleware", ...]   # first
TRACKLINE_WRITE_KEY = "WRITE_KEY"
TRACKLINE_HOST = "http://127.0.0.1:8765"          # optional
TRACKLINE_OPTIONS = {"flush_interval": 1.0}       # optional: any Client option
TRACKLINE_TRUSTED_PROXIES = ["10.0.0.0/8"]        # optional: believe their X-Forwarded-For
TRACKLINE_PAGE_VIEWS = True                       # optional: a page call per HTML page served
TRACKLINE_PAGE_FILTER = "myapp.analytics.is_page" # optional: a callable or its dotted path
TRACKLINE_BROWSER_ANONYMOUS_ID = False            # optional: calls skip analytics.js's id
INSTALLED_APPS = ["trackline.integrations.django", ...]  # for {% load trackline %}
```

With the app installed, `{% load trackline %}{% trackline_snippet %}` renders the analytics.js
loader (see `templatetags/trackline.py`).

The middleware initialises the default client (`trackline.init`) when Django builds it, which
under `gunicorn --preload` happens before the fork; the client starts its threads in each worker
on the first event. It runs sync or async, as the rest of the stack does. Page calls carry the
logged-in user's primary key as `user_id` when `django.contrib.auth` is in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from trackline.context import enter, leave
from trackline.integrations import configure_default_client, read_settings
from trackline.integrations.pages import PageView, PageViews
from trackline.integrations.proxies import TrustedProxies
from trackline.integrations.request import RequestInfo, from_environ, request_scope


class TracklineMiddleware:
    """Django middleware; list it first in `MIDDLEWARE` so every other layer sees the context."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        found = read_settings(lambda name, default: getattr(settings, name, default))
        configure_default_client(found.client)
        options = found.request
        self._proxies = TrustedProxies(options["trusted_proxies"])
        self._pages = PageViews(options["page_views"], options["page_filter"])
        self._browser_anonymous_id = options["browser_anonymous_id"]
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        info = self._describe(request)
        values = request_scope(info, browser_anonymous_id=self._browser_anonymous_id)
        token = enter(values)
        try:
            response = self.get_response(request)
            self._finish(request, info, values, response)
            return response
        finally:
            leave(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        info = self._describe(request)
        values = request_scope(info, browser_anonymous_id=self._browser_anonymous_id)
        token = enter(values)
        try:
            response = await self.get_response(request)
            self._finish(request, info, values, response)
            return response
        finally:
            leave(token)

    def _describe(self, request: HttpRequest) -> RequestInfo:
        # request.scheme and request.path are right under WSGI and ASGI alike; META's are not.
        return from_environ(request.META, self._proxies, scheme=request.scheme, path=request.path)

    def _finish(
        self, request: HttpRequest, info: RequestInfo, values: dict[str, Any], response: Any
    ) -> None:
        """Make the page call, and keep the context for a streamed body, which the server
        iterates after the middleware has returned."""
        if getattr(response, "streaming", False):
            content = response.streaming_content
            if getattr(response, "is_async", False):
                response.streaming_content = _async_chunks(content, values)
            else:
                response.streaming_content = _chunks(content, values)
        if self._pages.enabled:
            view = PageView(info, int(response.status_code), response.get("Content-Type"))
            self._pages.record(view, user_id=_user_id(request))


_END: Any = object()


def _chunks(content: Iterable[bytes], values: Mapping[str, Any]) -> Iterator[bytes]:
    """A streamed body whose chunks are produced inside the request's context."""
    iterator = iter(content)
    while True:
        token = enter(values)
        try:
            chunk = next(iterator, _END)
        finally:
            leave(token)
        if chunk is _END:
            return
        yield chunk


async def _async_chunks(
    content: AsyncIterable[bytes], values: Mapping[str, Any]
) -> AsyncIterator[bytes]:
    """`_chunks` for the async bodies Django streams under ASGI."""
    iterator = aiter(content)
    while True:
        token = enter(values)
        try:
            chunk = await anext(iterator, _END)
        finally:
            leave(token)
        if chunk is _END:
            return
        yield chunk


def _user_id(request: HttpRequest) -> str | None:
    """The logged-in user's primary key, if authentication middleware ran and someone is in."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)
