"""The destinations config file (`trackline collector --config trackline.toml`): read with
`tomllib`, every key checked, `${NAME}` read from the environment.

A bad file refuses to start with one line naming the file, the destination and the key, and
never the value: values may be secrets (a webhook secret, a write key, a DSN's password).
The settings objects keep secrets out of their `repr` for the same reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from trackline.collector.ingest import MESSAGE_TYPES

KINDS: Final = ("webhook", "tracking-api", "file", "postgres")
#: Segment retries a destination for four hours.
DEFAULT_RETRY_WINDOW: Final = 4 * 3600.0
#: Attempts a job gets before the window may fail it (rudder-server also insists on some).
DEFAULT_MIN_ATTEMPTS: Final = 3
DEFAULT_BATCH_SIZE: Final = {"webhook": 1, "tracking-api": 2500, "file": 1000, "postgres": 1000}
MAX_BATCH_SIZE: Final = 10_000
_ENV: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The keys every kind of destination takes (docs/reference/configuration.md lists them).
COMMON_KEYS: Final = frozenset(
    {
        "name",
        "kind",
        "enabled",
        "types",
        "retry_window",
        "max_attempts",
        "min_attempts",
        "rate_limit",
        "batch_size",
        "timeout",
        "concurrency",
        "backoff_base",
        "backoff_cap",
    }
)
#: The keys each kind takes besides.
KIND_KEYS: Final = {
    "webhook": frozenset({"url", "secret", "headers"}),
    "tracking-api": frozenset({"host", "write_key", "gzip"}),
    "file": frozenset({"path"}),
    "postgres": frozenset({"dsn", "schema"}),
}


class ConfigFileError(ValueError):
    """The config file cannot be used; the message is the one line to show."""


class _KeyError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    secret: str | None = dataclasses.field(default=None, repr=False)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class TrackingApiSettings:
    host: str
    write_key: str = dataclasses.field(repr=False)
    gzip: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class FileSettings:
    path: Path


@dataclasses.dataclass(frozen=True, slots=True)
class WarehouseSettings:
    dsn: str = dataclasses.field(repr=False)
    schema: str = "analytics"


KindSettings = WebhookSettings | TrackingApiSettings | FileSettings | WarehouseSettings


@dataclasses.dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One `[[destination]]`: what every kind takes, and its kind's own settings."""

    name: str
    kind: str
    settings: KindSettings
    enabled: bool = True
    types: frozenset[str] = MESSAGE_TYPES
    retry_window: float = DEFAULT_RETRY_WINDOW
    #: 0: no limit but the window.
    max_attempts: int = 0
    min_attempts: int = DEFAULT_MIN_ATTEMPTS
    #: Requests per second at most; None: no limit.
    rate_limit: float | None = None
    batch_size: int = 1
    timeout: float = 10.0
    concurrency: int = 1
    backoff_base: float = 1.0
    backoff_cap: float = 60.0


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `90s`, `30m`, `4h`, `1d`, `250ms`."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration such as 30s, 10m, 4h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("must be a number of seconds or a duration such as 30s, 10m, 4h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a duration of zero or more")
    return seconds


def _expand(value: str, key: str, environ: Mapping[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise _KeyError(key, f"environment variable {name} is not set")
        return environ[name]

    return _ENV.sub(lookup, value)


class _Table:
    """One destination's table: typed getters that raise `_KeyError` naming the key."""

    def __init__(self, table: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self._table = table
        self._environ = environ

    def has(self, key: str) -> bool:
        return key in self._table

    def text(self, key: str, default: str | None = None) -> str:
        """A string (environment expanded); required unless there is a `default`."""
        value = self._table.get(key)
        if value is None:
            if default is None:
                raise _KeyError(key, "is required")
            return default
        if not isinstance(value, str):
            raise _KeyError(key, "must be a string")
        expanded = _expand(value, key, self._environ)
        if not expanded:
            raise _KeyError(key, "must not be empty")
        return expanded

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self._table else None

    def flag(self, key: str, default: bool) -> bool:
        value = self._table.get(key, default)
        if not isinstance(value, bool):
            raise _KeyError(key, "must be true or false")
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self._table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _KeyError(key, "must be a whole number")
        if value < low or (high is not None and value > high):
            bound = f"{low}-{high}" if high is not None else f"{low} or more"
            raise _KeyError(key, f"must be {bound}")
        return value

    def seconds(self, key: str, default: float, *, positive: bool = True) -> float:
        if key not in self._table:
            return default
        try:
            seconds = parse_duration(self._table[key])
        except ValueError as exc:
            raise _KeyError(key, str(exc)) from None
        if positive and seconds <= 0:
            raise _KeyError(key, "must be more than zero")
        return seconds

    def headers(self, key: str) -> dict[str, str]:
        value = self._table.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(name, str) and isinstance(text, str) for name, text in value.items()
        ):
            raise _KeyError(key, "must be a table of strings")
        return {name: _expand(text, f"{key}.{name}", self._environ) for name, text in value.items()}

    def types(self, key: str) -> frozenset[str]:
        value = self._table.get(key)
        if value is None:
            return MESSAGE_TYPES
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise _KeyError(key, "must be a non-empty list of message types")
        unknown = sorted(set(value) - MESSAGE_TYPES)
        if unknown:
            raise _KeyError(key, f"{unknown[0]!r} is not one of {sorted(MESSAGE_TYPES)}")
        return frozenset(value)


def _http_url(value: str, key: str, *, origin_only: bool = False) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _KeyError(key, "must be an http:// or https:// URL")
    if origin_only and parts.path not in ("", "/"):
        raise _KeyError(key, "must be an origin such as https://api.segment.io, without a path")
    return value.rstrip("/") if origin_only else value


def _kind_settings(kind: str, table: _Table, base: Path) -> KindSettings:
    if kind == "webhook":
        return WebhookSettings(
            url=_http_url(table.text("url"), "url"),
            secret=table.optional_text("secret"),
            headers=table.headers("headers"),
        )
    if kind == "tracking-api":
        return TrackingApiSettings(
            host=_http_url(table.text("host", "https://api.segment.io"), "host", origin_only=True),
            write_key=table.text("write_key"),
            gzip=table.flag("gzip", True),
        )
    if kind == "file":
        path = Path(table.text("path"))
        return FileSettings(path if path.is_absolute() else base / path)
    schema = table.text("schema", "analytics")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise _KeyError("schema", "must be a PostgreSQL name: letters, digits, _ (63 at most)")
    dsn = table.text("dsn")
    if not dsn.startswith(("postgresql://", "postgres://")) and "=" not in dsn:
        raise _KeyError("dsn", "must be a postgresql:// URL or key=value connection string")
    return WarehouseSettings(dsn, schema)


def _destination(raw: Mapping[str, Any], environ: Mapping[str, str], base: Path) -> Any:
    table = _Table(raw, environ)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _KeyError("kind", f"must be one of {', '.join(KINDS)}")
    unknown = sorted(set(raw) - COMMON_KEYS - KIND_KEYS[kind])
    if unknown:
        raise _KeyError(unknown[0], f"is not a setting of a {kind} destination")
    backoff_base = table.seconds("backoff_base", 1.0)
    backoff_cap = table.seconds("backoff_cap", 60.0)
    if backoff_cap < backoff_base:
        raise _KeyError("backoff_cap", "must be at least backoff_base")
    concurrency = table.integer("concurrency", 1, 1, 32)
    if kind == "file" and concurrency != 1:
        raise _KeyError("concurrency", "a file destination writes with one worker: leave it at 1")
    rate_limit = raw.get("rate_limit")
    if rate_limit is not None and (
        isinstance(rate_limit, bool) or not isinstance(rate_limit, int | float) or rate_limit <= 0
    ):
        raise _KeyError("rate_limit", "must be a number of requests per second above zero")
    return DestinationConfig(
        name=table.text("name"),
        kind=kind,
        settings=_kind_settings(kind, table, base),
        enabled=table.flag("enabled", True),
        types=table.types("types"),
        retry_window=table.seconds("retry_window", DEFAULT_RETRY_WINDOW, positive=False),
        max_attempts=table.integer("max_attempts", 0, 0),
        min_attempts=table.integer("min_attempts", DEFAULT_MIN_ATTEMPTS, 1),
        rate_limit=None if rate_limit is None else float(rate_limit),
        batch_size=table.integer("batch_size", DEFAULT_BATCH_SIZE[kind], 1, MAX_BATCH_SIZE),
        timeout=table.seconds("timeout", 10.0),
        concurrency=concurrency,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )


def parse(
    document: Mapping[str, Any],
    *,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> list[DestinationConfig]:
    """The destinations of a parsed TOML document; raises `ConfigFileError` (one line naming
    `source`, the destination and the key). Relative file paths are taken from `base`."""
    env = os.environ if environ is None else environ
    folder = base if base is not None else Path.cwd()
    unknown = sorted(set(document) - {"destination"})
    if unknown:
        raise ConfigFileError(f"{source}: {unknown[0]}: unknown setting (expected [[destination]])")
    tables = document.get("destination", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigFileError(f"{source}: destination: must be written as [[destination]] tables")
    destinations: list[DestinationConfig] = []
    seen: set[str] = set()
    for number, raw in enumerate(tables, 1):
        name = raw.get("name")
        named = isinstance(name, str) and name
        label = f"destination {name!r}" if named else f"destination #{number}"
        try:
            destination = _destination(raw, env, folder)
        except _KeyError as exc:
            raise ConfigFileError(f"{source}: {label}: {exc.key}: {exc.problem}") from None
        if destination.name in seen:
            raise ConfigFileError(f"{source}: {label}: name: is used by another destination")
        seen.add(destination.name)
        destinations.append(destination)
    return destinations


def load(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> list[DestinationConfig]:
    """Read the config file at `path`; raises `ConfigFileError` with the one line to show."""
    where = Path(path)
    try:
        document = tomllib.loads(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{where}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, never a value.
        raise ConfigFileError(f"{where}: is not valid TOML: {exc}") from None
    return parse(document, source=str(where), environ=environ, base=where.parent.resolve())
