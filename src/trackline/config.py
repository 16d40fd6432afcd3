"""Every client option in one frozen dataclass: its default, its validation, its environment name.

`Config`'s fields are the one place a default is written: `Client`'s signature and the retry
policy take theirs from `default(...)`, and a test holds the documentation's options table
(docs/reference/client-options.md) to them.

The write key, the host and the spool directory may also come from the environment
(`TRACKLINE_WRITE_KEY`, `TRACKLINE_HOST`, `TRACKLINE_SPOOL`) so that deployments and the
`trackline` command can point code elsewhere without editing it; an argument always wins.
Validation runs once at construction and names the option and the constraint it broke, so a
typo fails at startup rather than as silent loss later.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from trackline.errors import ConfigError

DEFAULT_HOST: Final = "https://api.segment.io"
#: Durable mode's default bound on the message bytes one process keeps in its spool (1 GiB).
DEFAULT_MAX_SPOOL_BYTES: Final = 1024**3
#: Durable mode's default age past which a spooled message is dropped as expired (7 days).
DEFAULT_MAX_AGE: Final = 7 * 24 * 3600.0

#: Called with (error, messages) when messages are dropped; never raised into the app.
ErrorCallback = Callable[[Any, list[dict[str, Any]]], object]
#: Called with the messages of each delivered batch.
SuccessCallback = Callable[[list[dict[str, Any]]], object]


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Validated client options; docs/reference/client-options.md says what each one does."""

    write_key: str
    host: str = DEFAULT_HOST
    timeout: float = 10.0
    max_queue_size: int = 10_000
    max_queue_bytes: int = 32 * 1024 * 1024
    flush_at: int = 100
    flush_interval: float = 0.5
    gzip: bool = True
    sync: bool = False
    send: bool = True
    workers: int = 4
    max_retries: int = 10
    delivery_timeout: float = 600.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    queue_full: Literal["drop", "block"] = "drop"
    block_timeout: float = 5.0
    on_error: ErrorCallback | None = None
    on_success: SuccessCallback | None = None
    proxy: str | None = None
    shutdown_timeout: float = 5.0
    spool: str | None = None
    max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES
    max_age: float = DEFAULT_MAX_AGE
    spool_synchronous: Literal["normal", "full"] = "normal"
    trace_ids: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.write_key, str) or not self.write_key:
            raise ConfigError("write_key", "must be a non-empty string")
        object.__setattr__(self, "host", _normalise_host(self.host, "host"))
        if self.proxy is not None:
            object.__setattr__(self, "proxy", _normalise_host(self.proxy, "proxy"))
        _positive_number(self.timeout, "timeout")
        _positive_number(self.flush_interval, "flush_interval")
        _positive_number(self.delivery_timeout, "delivery_timeout")
        _positive_number(self.backoff_base, "backoff_base")
        _positive_number(self.backoff_cap, "backoff_cap")
        _positive_number(self.block_timeout, "block_timeout", allow_zero=True)
        _positive_number(self.shutdown_timeout, "shutdown_timeout", allow_zero=True)
        _int_in_range(self.max_queue_size, "max_queue_size", 1, None)
        _int_in_range(self.max_queue_bytes, "max_queue_bytes", 64 * 1024, None)
        _int_in_range(self.flush_at, "flush_at", 1, 2500)
        _int_in_range(self.workers, "workers", 1, 64)
        _int_in_range(self.max_retries, "max_retries", 0, 1000)
        for name in ("gzip", "sync", "send", "trace_ids"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, "must be True or False")
        if self.queue_full not in ("drop", "block"):
            raise ConfigError("queue_full", f"must be 'drop' or 'block', not {self.queue_full!r}")
        for name in ("on_error", "on_success"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ConfigError(name, "must be callable or None")
        if self.spool is not None and (not isinstance(self.spool, str) or not self.spool):
            raise ConfigError("spool", f"must be a directory path or None, not {self.spool!r}")
        _int_in_range(self.max_spool_bytes, "max_spool_bytes", 1, None)
        _positive_number(self.max_age, "max_age")
        if self.spool_synchronous not in ("normal", "full"):
            raise ConfigError(
                "spool_synchronous", f"must be 'normal' or 'full', not {self.spool_synchronous!r}"
            )


#: Every option, in the order of `Config`'s fields.
OPTION_NAMES: Final = tuple(field.name for field in dataclasses.fields(Config))
#: Options a `None` argument takes from the environment (`TRACKLINE_*`) before the default.
FROM_ENVIRONMENT: Final = frozenset({"write_key", "host", "spool"})
_DEFAULTS: Final = types.MappingProxyType(
    {
        field.name: field.default
        for field in dataclasses.fields(Config)
        if field.default is not dataclasses.MISSING
    }
)


def default(option: str) -> Any:
    """The default value of `option`, as `Config` declares it."""
    return _DEFAULTS[option]


def resolve_write_key(write_key: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The write key given, else `TRACKLINE_WRITE_KEY`; a `ConfigError` when neither is set."""
    if write_key is None:
        write_key = (os.environ if environ is None else environ).get("TRACKLINE_WRITE_KEY")
    if not write_key:
        raise ConfigError(
            "write_key", "is required (pass it, or set TRACKLINE_WRITE_KEY in the environment)"
        )
    return write_key


def resolve_host(host: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The host given, else `TRACKLINE_HOST`, else Segment's API."""
    if host is None:
        host = (os.environ if environ is None else environ).get("TRACKLINE_HOST") or DEFAULT_HOST
    return host


def resolve_spool(
    spool: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The spool directory given, else `TRACKLINE_SPOOL`, else None (memory mode)."""
    if spool is None:
        return (os.environ if environ is None else environ).get("TRACKLINE_SPOOL") or None
    if isinstance(spool, os.PathLike):
        return os.fspath(spool)
    return spool


def _normalise_host(value: object, option: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(option, "must be a URL string such as 'https://api.segment.io'")
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            option, f"{value!r} is not an http(s) URL such as 'https://api.segment.io'"
        )
    path = parts.path.rstrip("/")
    # The API lives under /v1; hosts given with it would post to /v1/v1/batch, a common mistake.
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _positive_number(value: object, option: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(option, f"must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise ConfigError(option, f"must be {bound}, not {value!r}")


def _int_in_range(value: object, option: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(option, f"must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(option, f"must be {bound}, not {value}")
