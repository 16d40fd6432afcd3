"""Every option of a collector in one value, `CollectorSettings`: `start`, `serve`, `run`,
`create_app` and `trackline collector` all take it, so an option, its default and its check
are written once.

The functions also take the options as keywords (`serve(path, write_keys=["k"])`); those are
typed by `SettingsOptions`, which a test keeps equal to the dataclass's fields.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypedDict

from trackline.collector.access import Clients, Hosts, Origins, ReadAccess, WriteKeys
from trackline.collector.destinations.config import DestinationConfig
from trackline.errors import ConfigError

if TYPE_CHECKING:
    from trackline.collector.store import Store

#: The port `run` and `trackline collector` listen on when none is given; `start` and
#: `serve` take a free one instead.
DEFAULT_PORT = 8765


def _strings(value: Iterable[str], field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(field, "must be a list of strings, not one string")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(field, f"entries must be strings, not {type(item).__name__}")
    return items


@dataclasses.dataclass(frozen=True)
class CollectorSettings:
    """How a collector serves; each field is checked when the value is made (`ConfigError`
    names the field).

    - `database`: a SQLite file path, a `postgresql://` URL, or an open `Store` the caller
      owns and closes.
    - `host`, `port`: where to listen (None: 8765 for `run`, a free port for `start`/`serve`).
    - `write_keys`: the only keys that may write; none: any well-formed key (loopback only).
    - `read_token`: what readers of `/api/*` and the debugger must show; None: only clients on
      this machine may read.
    - `allow_hosts`: host names answered besides the defaults (`localhost`, IP literals, the
      `host` listened on); `*` for any.
    - `allow_origins`: web origins that may send requests that change data besides the
      collector's own; `*` lets any page send events.
    - `trusted_proxies`: addresses or networks whose `X-Forwarded-*` headers are believed.
    - `header_timeout`, `body_timeout`: seconds for a request's headers, then its body.
    - `send_timeout`: seconds a client may leave an answer (a listing, the live stream) unread
      before it is disconnected.
    - `lock_timeout`: seconds a commit waits for a lock another process holds (then 503).
    - `fsync`: commits survive power loss, not only a crash (slower).
    - `analytics_js`: a file (analytics.js, from the user's node_modules) served at
      `/analytics.js/v1/{writeKey}/analytics.min.js`, with the chunks beside it.
    - `destinations`: where stored events are routed (`trackline.collector.destinations`:
      `load(path)` reads them from a config file).
    - `retention`: seconds after which events are deleted with their delivery outcomes (on
      PostgreSQL a day's partition at a time, on SQLite in small chunks); None keeps
      everything.
    - `processes`: processes serving the port (`run` only; PostgreSQL only, since processes
      sharing one SQLite file would not see each other's live events).
    """

    database: str | os.PathLike[str] | Store
    host: str = "127.0.0.1"
    port: int | None = None
    write_keys: Sequence[str] = ()
    read_token: str | None = None
    allow_hosts: Sequence[str] = ()
    allow_origins: Sequence[str] = ()
    trusted_proxies: Sequence[str] = ()
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    lock_timeout: float = 5.0
    fsync: bool = False
    analytics_js: str | os.PathLike[str] | None = None
    destinations: Sequence[DestinationConfig] = ()
    retention: float | None = None
    processes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "destinations", tuple(self.destinations))
        for name in ("write_keys", "allow_hosts", "allow_origins", "trusted_proxies"):
            object.__setattr__(self, name, _strings(getattr(self, name), name))
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("host", "must be an address or a host name")
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 <= self.port <= 65535
        ):
            raise ConfigError("port", "must be a whole number 0-65535 (0: any free port)")
        for name in ("header_timeout", "body_timeout", "send_timeout", "lock_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, f"must be a number of seconds, not {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, f"must be a positive number of seconds, not {value!r}")
        if self.read_token is not None and not isinstance(self.read_token, str):
            raise ConfigError("read_token", "must be a string")
        self._check_engine_options()
        # The access policies check their own inputs; building them once here reports a bad
        # value when the settings are made, not when the first request arrives.
        self.policies()

    def _check_engine_options(self) -> None:
        from trackline.collector.store import is_postgres_url

        # An open store is the caller's: these options applied when it was opened.
        named = isinstance(self.database, str | os.PathLike)
        sqlite = named and not is_postgres_url(self.database)
        if self.retention is not None:
            value = self.retention
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError("retention", f"must be a number of seconds, not {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    "retention", f"must be a positive number of seconds, not {value!r}"
                )
        if isinstance(self.processes, bool) or not isinstance(self.processes, int):
            raise ConfigError("processes", f"must be a whole number, not {self.processes!r}")
        if self.processes < 1:
            raise ConfigError("processes", f"must be at least 1, not {self.processes}")
        if self.processes > 1 and sqlite:
            raise ConfigError(
                "processes",
                "needs a PostgreSQL database (--db postgresql://...): processes sharing one "
                "SQLite file would not see each other's live events, and take turns for its "
                "write lock (measured: no faster than one process)",
            )

    def policies(self) -> Policies:
        """The access policies these settings describe."""
        return Policies(
            write_keys=WriteKeys(self.write_keys),
            read_access=ReadAccess(self.read_token),
            hosts=Hosts(self.host, self.allow_hosts),
            origins=Origins(self.allow_origins),
            clients=Clients(self.trusted_proxies),
        )

    def listening_port(self, default: int) -> int:
        """`port`, or `default` when none was given."""
        return default if self.port is None else self.port


@dataclasses.dataclass(frozen=True)
class Policies:
    """Who may do what, as built from `CollectorSettings`."""

    write_keys: WriteKeys
    read_access: ReadAccess
    hosts: Hosts
    origins: Origins
    clients: Clients


class SettingsOptions(TypedDict, total=False):
    """`CollectorSettings`' fields other than `database`, as keyword arguments."""

    host: str
    port: int | None
    write_keys: Sequence[str]
    read_token: str | None
    allow_hosts: Sequence[str]
    allow_origins: Sequence[str]
    trusted_proxies: Sequence[str]
    header_timeout: float
    body_timeout: float
    send_timeout: float
    lock_timeout: float
    fsync: bool
    analytics_js: str | os.PathLike[str] | None
    destinations: Sequence[DestinationConfig]
    retention: float | None
    processes: int


def settings_of(
    database: str | os.PathLike[str] | Store | CollectorSettings, options: SettingsOptions
) -> CollectorSettings:
    """Settings from a database (or settings) and keyword options that override fields."""
    if isinstance(database, CollectorSettings):
        return dataclasses.replace(database, **options) if options else database
    return CollectorSettings(database, **options)
