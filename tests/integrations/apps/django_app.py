"""A small Django project in one module, for the tests and the gunicorn run.

Settings come from `TEST_APP_TRACKLINE_*` environment variables (JSON values decoded), so
gunicorn can serve `django_app:application` pointed at a test's collector; tests in this process
change them with `override_settings`. Building `application` builds the middleware, which
initialises the default client; under `gunicorn --preload` that and the "App Loaded" event
happen in the master before it forks the workers.
"""

from __future__ import annotations

import json
import os
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

import trackline


def _env(name: str) -> Any:
    raw = os.environ.get(f"TEST_APP_{name}")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class HeaderLogin:
    """The app's own authentication: `X-User: 42` logs user 42 in (for page-call user ids)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.headers.get("X-User")
        request.user = types.SimpleNamespace(is_authenticated=bool(user), pk=user)
        return self.get_response(request)


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="trackline-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["trackline.integrations.django"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        DATABASES={},
        MIDDLEWARE=[
            "trackline.integrations.django.TracklineMiddleware",
            f"{__name__}.HeaderLogin",
        ],
        **{
            name: value
            for name in ("TRACKLINE_WRITE_KEY", "TRACKLINE_HOST", "TRACKLINE_OPTIONS")
            if (value := _env(name)) is not None
        },
    )
    django.setup()


def hit(request: HttpRequest, name: str) -> HttpResponse:
    time.sleep(float(request.GET.get("wait", "0")))
    trackline.track("visitor", "Django Hit", {"name": name, "pid": os.getpid()})
    return HttpResponse(str(os.getpid()), content_type="text/plain")


async def async_hit(request: HttpRequest) -> HttpResponse:
    trackline.track("visitor", "Django Async Hit")
    return HttpResponse("async", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def rows() -> Iterator[str]:
        yield "id\n"
        trackline.track("visitor", "Export Streamed")
        yield "1\n"

    return StreamingHttpResponse(rows(), content_type="text/csv")


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    async def rows() -> AsyncIterator[str]:
        yield "id\n"
        trackline.track("visitor", "Async Export Streamed")
        yield "1\n"

    return StreamingHttpResponse(rows(), content_type="text/csv")


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<h1>Django page</h1>")


urlpatterns = [
    path("hit/<str:name>", hit),
    path("async-hit", async_hit),
    path("page", page),
    path("stream", stream),
    path("async-stream", async_stream),
]


def make_application() -> Any:
    """A fresh WSGI handler, built (with its middleware) from the current settings."""
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def make_asgi_application() -> Any:
    """A fresh ASGI handler, built from the current settings."""
    from django.core.handlers.asgi import ASGIHandler

    return ASGIHandler()


if os.environ.get("TEST_APP_SERVE") == "django":
    application = make_application()
    trackline.track("server", "App Loaded", {"pid": os.getpid()})
