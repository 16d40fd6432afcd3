"""The module-level default client: `trackline.init(...)`, or `trackline.write_key = ...`, then
`trackline.track(...)`, as in the seed's `Analytics.Initialize` and segment-analytics-python.

The default client is created on first use from the settings on the `trackline` module (or the
`TRACKLINE_*` environment variables), so setting attributes after the first call has no effect:
call `init()` to replace the client instead.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from trackline.client import Client

P = ParamSpec("P")
R = TypeVar("R")

#: Module attributes of `trackline` that configure the default client.
MODULE_SETTINGS = ("host", "on_error", "on_success", "sync", "send")

_lock = threading.Lock()
_client: Client | None = None

#: Swaps the module-level default client of a compat module (`trackline.compat.segment`), by
#: module name: takes the client to install (None: made from the module's settings on next use)
#: and returns the one it replaced. Registered when the module is imported.
CompatSwap = Callable[[Any], Any]
_compat_defaults: dict[str, CompatSwap] = {}


def init(write_key: str | None = None, **options: Any) -> Client:
    """Create the default client (shutting down a previous one) and return it.

    Takes the same options as `Client`.
    """
    global _client
    new = Client(write_key, **options)
    with _lock:
        old, _client = _client, new
    if old is not None:
        old.shutdown()
    return new


def get_client() -> Client:
    """The default client, created from the `trackline` module settings on first use."""
    global _client
    with _lock:
        if _client is None:
            package = sys.modules["trackline"]
            options = {
                name: getattr(package, name)
                for name in MODULE_SETTINGS
                if getattr(package, name, None) is not None
            }
            _client = Client(getattr(package, "write_key", None), **options)
        return _client


def current() -> Client | None:
    """The default client if one exists, without making one."""
    return _client


def swap(client: Client | None) -> Client | None:
    """Make `client` the default client (None: made afresh on next use); returns the old one.

    For test helpers that route the module-level functions elsewhere for a while.
    """
    global _client
    with _lock:
        old, _client = _client, client
    return old


def register_compat_default(module: str, swap: CompatSwap) -> None:
    """Make a compat module's default client reachable by `compat_defaults()`."""
    _compat_defaults[module] = swap


def compat_defaults() -> dict[str, CompatSwap]:
    """The compat modules imported so far, each with the swap of its default client."""
    return dict(_compat_defaults)


def flush(timeout: float | None = None) -> bool:
    """Flush the default client; see `Client.flush`."""
    return get_client().flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Shut the default client down; the next module-level call starts a new one."""
    global _client
    with _lock:
        client, _client = _client, None
    return True if client is None else client.shutdown(timeout)


def _on_default(method: Callable[Concatenate[Client, P], R]) -> Callable[P, R]:
    name = method.__name__

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, R] = getattr(get_client(), name)
        return bound(*args, **kwargs)

    return call


identify = _on_default(Client.identify)
track = _on_default(Client.track)
page = _on_default(Client.page)
screen = _on_default(Client.screen)
group = _on_default(Client.group)
alias = _on_default(Client.alias)
