"""Web framework integrations: request context for every call, and optional page calls.

```
wsgi.py     WSGI middleware (any WSGI app: Flask, Django, Pyramid, Bottle...)
asgi.py     pure ASGI middleware (Starlette, FastAPI, any ASGI app)
django.py   Django middleware configured from TRACKLINE_* settings
flask.py    Flask extension configured from TRACKLINE_* config keys
request.py  a request (environ or scope) -> RequestInfo -> context
proxies.py  the client's address, honouring X-Forwarded-For from trusted proxies only
pages.py    the automatic page call and its filter
```

Importing `trackline` imports none of these; `django.py` and `flask.py` import their framework,
which is an optional extra (`pip install 'trackline[django]'`, `'trackline[flask]'`).
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypedDict, TypeVar

from trackline import _default
from trackline.client import Client
from trackline.errors import ConfigError
from trackline.integrations.pages import PageFilter, PageViews
from trackline.integrations.proxies import TrustedProxies

App = TypeVar("App")

#: Reads one setting: `(name, default) -> value`, as `getattr(settings, ...)` or `config.get`.
SettingReader = Callable[[str, Any], Any]

_lock = threading.Lock()


class RequestOptions(TypedDict):
    """The request options every integration takes, as keyword arguments."""

    trusted_proxies: tuple[str, ...]
    page_views: bool
    page_filter: PageFilter | None
    browser_anonymous_id: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSettings:
    """The default client's settings: `TRACKLINE_WRITE_KEY`, `TRACKLINE_HOST` and
    `TRACKLINE_OPTIONS` (a dict of `Client` options); None and empty when not set."""

    write_key: str | None = None
    host: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """What the `TRACKLINE_*` settings of a framework say, read and checked."""

    client: ClientSettings
    request: RequestOptions


def read_settings(setting: SettingReader) -> Settings:
    """Read `TRACKLINE_*` settings (Django settings, Flask config); changes nothing.

    The request options come from `TRACKLINE_TRUSTED_PROXIES`, `TRACKLINE_PAGE_VIEWS`,
    `TRACKLINE_PAGE_FILTER` (a callable or its dotted path) and
    `TRACKLINE_BROWSER_ANONYMOUS_ID`. A wrong value raises `ConfigError` naming the setting.
    """
    options = setting("TRACKLINE_OPTIONS", None)
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError("TRACKLINE_OPTIONS", f"must be a dict, not {type(options).__name__}")
    client = ClientSettings(
        setting("TRACKLINE_WRITE_KEY", None),
        setting("TRACKLINE_HOST", None),
        types.MappingProxyType(dict(options or {})),
    )
    page_filter = setting("TRACKLINE_PAGE_FILTER", None)
    if isinstance(page_filter, str):
        page_filter = import_object(page_filter, "TRACKLINE_PAGE_FILTER")
    proxies = setting("TRACKLINE_TRUSTED_PROXIES", None) or ()
    page_views = setting("TRACKLINE_PAGE_VIEWS", False)
    browser_anonymous_id = setting("TRACKLINE_BROWSER_ANONYMOUS_ID", True)
    if not isinstance(browser_anonymous_id, bool):
        raise ConfigError(
            "TRACKLINE_BROWSER_ANONYMOUS_ID", f"must be True or False, not {browser_anonymous_id!r}"
        )
    try:
        # Built here only to check the values and name the setting that is wrong.
        TrustedProxies(proxies)
        PageViews(page_views, page_filter)
    except ConfigError as error:
        raise ConfigError(f"TRACKLINE_{error.option.upper()}", error.problem) from None
    request = RequestOptions(
        trusted_proxies=tuple(proxies),
        page_views=page_views,
        page_filter=page_filter,
        browser_anonymous_id=browser_anonymous_id,
    )
    return Settings(client, request)


_configured: tuple[ClientSettings, Client] | None = None


def configure_default_client(settings: ClientSettings) -> None:
    """`trackline.init` from framework settings, once per distinct configuration.

    Frameworks build middleware more than once (Django's test client builds a handler per
    client), and re-running `init` would replace a client that may hold queued events. With
    nothing set, the default client is left to the `trackline` module settings and the
    `TRACKLINE_*` environment variables. A wrong option raises `ConfigError` naming its
    setting.
    """
    global _configured
    if settings == ClientSettings():
        return
    with _lock:
        if (
            _configured is not None
            and _configured[0] == settings
            and _default.current() is _configured[1]
        ):
            return
        host = {"host": settings.host} if settings.host else {}
        try:
            client = _default.init(settings.write_key, **host, **settings.options)
        except ConfigError as error:
            if error.option in ("write_key", "host"):
                raise ConfigError(f"TRACKLINE_{error.option.upper()}", error.problem) from None
            raise ConfigError("TRACKLINE_OPTIONS", f"{error.option}: {error.problem}") from None
        except TypeError as error:
            raise ConfigError("TRACKLINE_OPTIONS", str(error)) from None
        _configured = (settings, client)


def import_object(path: str, setting: str) -> Any:
    """The object a dotted path (`package.module.name` or `package.module:name`) names."""
    module_name, _, name = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(setting, f"cannot import {path!r}: {error}") from None


class Middleware(Generic[App]):
    """What the WSGI and ASGI middlewares share: the wrapped app and the request options.

    `trusted_proxies`: addresses or networks (`"10.0.0.0/8"`, or `"unix"` for a UNIX socket) of
    the proxies in front of the app, whose `X-Forwarded-For`, `-Proto` and `-Host` headers are
    believed; none by default. `page_views`: make a `page` call per request that `page_filter`
    accepts (default filter: a successful GET answered with HTML). `client`: the client for
    page calls (default: the default client, looked up at each call). `browser_anonymous_id`:
    calls that name no anonymous id carry the one analytics.js keeps in the browser's
    `ajs_anonymous_id` cookie (default True), so server and browser events join up.
    """

    def __init__(
        self,
        app: App,
        *,
        trusted_proxies: Iterable[str] = (),
        page_views: bool = False,
        page_filter: PageFilter | None = None,
        client: Client | None = None,
        browser_anonymous_id: bool = True,
    ) -> None:
        if not isinstance(browser_anonymous_id, bool):
            raise ConfigError(
                "browser_anonymous_id", f"must be True or False, not {browser_anonymous_id!r}"
            )
        self.app = app
        self._proxies = TrustedProxies(trusted_proxies)
        self._pages = PageViews(page_views, page_filter, client)
        self._browser_anonymous_id = browser_anonymous_id
