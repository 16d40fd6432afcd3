"""segment-analytics-python 2.x's API on trackline's engine: `import ... as analytics` and go.

Code written for `import segment.analytics as analytics` runs unchanged with
`import trackline.compat.segment as analytics`: the same module settings (`write_key`, `host`,
`on_error`, `debug`, `send`, `sync_mode`, `max_queue_size`, `gzip`, `timeout`, `max_retries`,
`proxies`, `upload_size`, `upload_interval`), the same module functions, a `Client` with the
same argument names, positional order and defaults, and the same return value, a
`(success, message)` tuple. Underneath, a `trackline.Client` does the work, so the fixes come
along: bounded `flush()`, delivery at interpreter exit, fork safety, `Retry-After`, counters.

Where behaviour differs on purpose (see the documentation's guide "Migrating from
segment-analytics-python", docs/guides/migrating-from-segment.md): `join()` sends what is
queued before stopping; `sync_mode` retries and reports failures as `(False, message)` plus
`on_error` instead of raising; module-level `shutdown()` lets the next call start a fresh
client; `debug` and `log_handler` do not configure logging (configure the `trackline`
logger); OAuth options are accepted and ignored (the write key authenticates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from trackline import _default, messages
from trackline.client import Client as _Engine
from trackline.compat._segment_values import (
    cleaned_payload,
    proxy_for,
    segment_errors,
    stringify_id,
)
from trackline.config import resolve_host
from trackline.errors import DeliveryError, InvalidMessageType
from trackline.replay import replay
from trackline.stats import Stats
from trackline.wire import MAX_BATCH_MESSAGES

Message = dict[str, Any]
Result = tuple[bool, Message]
OnError = Callable[[Any, list[Message]], object]


class APIError(DeliveryError):
    """What `on_error` receives: a trackline `DeliveryError` that also has the attributes of
    segment's `APIError` (`status`, `code`, `message`)."""

    def __init__(self, error: DeliveryError) -> None:
        super().__init__(error.reason, error.detail, error.status)
        self.code = error.reason
        self.message = error.detail


class Client:
    """segment-analytics-python's `Client`: same arguments, in the same order."""

    class DefaultConfig:
        """The defaults of segment-analytics-python 2.x, which module settings start from."""

        write_key: str | None = None
        host: str | None = None
        on_error: OnError | None = None
        debug = False
        log_handler: logging.Handler | None = None
        send = True
        sync_mode = False
        max_queue_size = 10_000
        gzip = False
        timeout: float = 15
        max_retries = 10
        proxies: Mapping[str, str] | str | None = None
        thread = 1
        upload_interval = 0.5
        upload_size = 100
        oauth_client_id: str | None = None
        oauth_client_key: str | None = None
        oauth_key_id: str | None = None
        oauth_auth_server = "https://oauth2.segment.io"
        oauth_scope = "tracking_api:write"

    def __init__(
        self,
        write_key: str | None = DefaultConfig.write_key,
        host: str | None = DefaultConfig.host,
        debug: bool = DefaultConfig.debug,
        max_queue_size: int = DefaultConfig.max_queue_size,
        send: bool = DefaultConfig.send,
        on_error: OnError | None = DefaultConfig.on_error,
        gzip: bool = DefaultConfig.gzip,
        max_retries: int = DefaultConfig.max_retries,
        sync_mode: bool = DefaultConfig.sync_mode,
        timeout: float = DefaultConfig.timeout,
        proxies: Mapping[str, str] | str | None = DefaultConfig.proxies,
        thread: int = DefaultConfig.thread,
        upload_size: int = DefaultConfig.upload_size,
        upload_interval: float = DefaultConfig.upload_interval,
        log_handler: logging.Handler | None = DefaultConfig.log_handler,
        oauth_client_id: str | None = DefaultConfig.oauth_client_id,
        oauth_client_key: str | None = DefaultConfig.oauth_client_key,
        oauth_key_id: str | None = DefaultConfig.oauth_key_id,
        oauth_auth_server: str = DefaultConfig.oauth_auth_server,
        oauth_scope: str = DefaultConfig.oauth_scope,
        max_total_backoff_duration: float | None = None,
        max_rate_limit_duration: float | None = None,
    ) -> None:
        """`max_total_backoff_duration` (2.4) bounds each batch's retries, as trackline's
        `delivery_timeout`; `max_rate_limit_duration` is covered by the same bound."""
        self.write_key = write_key
        self.host = host
        self.on_error = on_error
        self.debug = debug
        self.send = send
        self.sync_mode = sync_mode
        self.gzip = gzip
        self.timeout = timeout
        self.proxies = proxies
        self.max_queue_size = max_queue_size
        self.max_retries = max_retries
        self.upload_size = upload_size
        self.upload_interval = upload_interval
        self.thread = thread
        options: dict[str, Any] = {}
        if max_total_backoff_duration:
            options["delivery_timeout"] = max_total_backoff_duration
        if isinstance(upload_size, int) and upload_size > MAX_BATCH_MESSAGES:
            upload_size = MAX_BATCH_MESSAGES
        with segment_errors():
            resolved_host = resolve_host(host)
            self._client = _Engine(
                write_key,
                host=resolved_host,
                timeout=timeout,
                max_queue_size=max_queue_size,
                flush_at=upload_size,
                flush_interval=upload_interval,
                gzip=gzip,
                sync=sync_mode,
                send=send,
                workers=thread,
                max_retries=max_retries,
                on_error=None if on_error is None else _segment_on_error(on_error),
                proxy=proxy_for(proxies, resolved_host),
                **options,
            )

    # -- the six calls, with segment's signatures --------------------------------------------

    def identify(
        self,
        user_id: Any = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Tie a user to their traits; returns `(accepted, message)`."""
        return self._enqueue(
            "identify",
            {"userId": user_id, "anonymousId": anonymous_id, "traits": traits or {}},
            context,
            timestamp,
            integrations,
            message_id,
        )

    def track(
        self,
        user_id: Any = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Record an action; returns `(accepted, message)`."""
        fields = {
            "userId": user_id,
            "anonymousId": anonymous_id,
            "event": event,
            "properties": properties or {},
        }
        return self._enqueue("track", fields, context, timestamp, integrations, message_id)

    def alias(
        self,
        previous_id: Any = None,
        user_id: Any = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Tie a previous id to a user id; returns `(accepted, message)`."""
        return self._enqueue(
            "alias",
            {"previousId": previous_id, "userId": user_id},
            context,
            timestamp,
            integrations,
            message_id,
        )

    def group(
        self,
        user_id: Any = None,
        group_id: Any = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Associate a user with a group; returns `(accepted, message)`."""
        fields = {
            "userId": user_id,
            "anonymousId": anonymous_id,
            "groupId": group_id,
            "traits": traits or {},
        }
        return self._enqueue("group", fields, context, timestamp, integrations, message_id)

    def page(
        self,
        user_id: Any = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Record a page view (note: `category` comes before `name`)."""
        fields = _view_fields(user_id, anonymous_id, category, name, properties)
        return self._enqueue("page", fields, context, timestamp, integrations, message_id)

    def screen(
        self,
        user_id: Any = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: Any = None,
    ) -> Result:
        """Record a screen view (note: `category` comes before `name`)."""
        fields = _view_fields(user_id, anonymous_id, category, name, properties)
        return self._enqueue("screen", fields, context, timestamp, integrations, message_id)

    def _enqueue(
        self,
        kind: str,
        fields: Message,
        context: Mapping[str, Any] | None,
        timestamp: Any,
        integrations: Mapping[str, Any] | None,
        message_id: Any,
    ) -> Result:
        """Build segment's message dict, send it through the engine, return `(ok, message)`."""
        with segment_errors():
            when = messages.now_iso() if timestamp is None else messages.format_timestamp(timestamp)
            if not isinstance(context or {}, Mapping):
                raise InvalidMessageType("context", "must be a mapping (dict)")
            msg: Message = {
                "integrations": integrations or {},
                "timestamp": when,
                "context": {**(context or {}), "library": messages.LIBRARY},
                "type": kind,
                "messageId": messages.new_message_id() if message_id is None else str(message_id),
                **fields,
            }
            for key in ("userId", "anonymousId", "groupId", "previousId"):
                if key in msg:
                    msg[key] = stringify_id(msg[key])
            try:
                accepted = replay(self._client, msg)
            except InvalidMessageType:
                cleaned = cleaned_payload(msg)
                if cleaned is None:
                    raise
                msg = cleaned
                accepted = replay(self._client, msg)
        return accepted is not None, msg

    # -- flush and stop ----------------------------------------------------------------------

    def flush(self) -> None:
        """Send everything queued and wait until it is delivered or dropped (bounded by the
        delivery deadline, unlike segment's, which could wait forever)."""
        self._client.flush()

    def join(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the workers (within `timeout`, default 5 s)."""
        self._client.shutdown(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush and stop: `flush()` then `join()`."""
        self._client.flush(timeout)
        self._client.shutdown(timeout)

    @property
    def stats(self) -> Stats:
        """The trackline accounting of this client (`trackline.Stats`)."""
        return self._client.stats


# -- module-level settings and functions, as in `segment.analytics` --------------------------

write_key: str | None = Client.DefaultConfig.write_key
host: str | None = Client.DefaultConfig.host
on_error: OnError | None = Client.DefaultConfig.on_error
debug: bool = Client.DefaultConfig.debug
send: bool = Client.DefaultConfig.send
sync_mode: bool = Client.DefaultConfig.sync_mode
max_queue_size: int = Client.DefaultConfig.max_queue_size
gzip: bool = Client.DefaultConfig.gzip
timeout: float = Client.DefaultConfig.timeout
max_retries: int = Client.DefaultConfig.max_retries
proxies: Mapping[str, str] | str | None = Client.DefaultConfig.proxies
upload_size: int = Client.DefaultConfig.upload_size
upload_interval: float = Client.DefaultConfig.upload_interval

#: The client the module functions use, created from the settings above on first use.
default_client: Client | None = None

_lock = threading.Lock()


def _default_client() -> Client:
    global default_client
    with _lock:
        if default_client is None:
            default_client = Client(
                write_key,
                host=host,
                debug=debug,
                max_queue_size=max_queue_size,
                send=send,
                on_error=on_error,
                gzip=gzip,
                max_retries=max_retries,
                sync_mode=sync_mode,
                timeout=timeout,
                proxies=proxies,
                upload_size=upload_size,
                upload_interval=upload_interval,
            )
        return default_client


def swap_default_client(client: Client | None) -> Client | None:
    """Make `client` the default client (None: made from the settings on next use); returns
    the one it replaced. For test helpers (`trackline.testing.Capture.installed()`)."""
    global default_client
    with _lock:
        old, default_client = default_client, client
    return old


_default.register_compat_default(__name__, swap_default_client)


def track(*args: Any, **kwargs: Any) -> Result:
    """Send a track call with the default client."""
    return _default_client().track(*args, **kwargs)


def identify(*args: Any, **kwargs: Any) -> Result:
    """Send an identify call with the default client."""
    return _default_client().identify(*args, **kwargs)


def group(*args: Any, **kwargs: Any) -> Result:
    """Send a group call with the default client."""
    return _default_client().group(*args, **kwargs)


def alias(*args: Any, **kwargs: Any) -> Result:
    """Send an alias call with the default client."""
    return _default_client().alias(*args, **kwargs)


def page(*args: Any, **kwargs: Any) -> Result:
    """Send a page call with the default client."""
    return _default_client().page(*args, **kwargs)


def screen(*args: Any, **kwargs: Any) -> Result:
    """Send a screen call with the default client."""
    return _default_client().screen(*args, **kwargs)


def flush() -> None:
    """Flush the default client, made from the settings first if no call made it yet (as
    segment does: `default_client` then reads back what was set)."""
    _default_client().flush()


def join() -> None:
    """Send what is queued and stop the default client; the next call starts a new one."""
    shutdown()


def shutdown() -> None:
    """Flush and stop the default client; the next call starts a new one from the settings."""
    global default_client
    with _lock:
        client, default_client = default_client, None
    if client is not None:
        client.shutdown()


# -- helpers -----------------------------------------------------------------------------


def _segment_on_error(callback: OnError) -> OnError:
    def on_error(error: Any, batch: list[Message]) -> object:
        return callback(APIError(error) if isinstance(error, DeliveryError) else error, batch)

    return on_error


def _view_fields(
    user_id: Any, anonymous_id: Any, category: Any, name: Any, properties: Any
) -> Message:
    return {
        "userId": user_id,
        "anonymousId": anonymous_id,
        "category": category or None,
        "name": name or None,
        "properties": properties or {},
    }
