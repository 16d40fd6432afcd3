"""Translating between segment-analytics-python's conventions and trackline's: argument errors,
ids, proxies, and the cleaning of values JSON cannot hold."""

from __future__ import annotations

import contextlib
import logging
import numbers
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Final

from trackline.encoding import dumps
from trackline.errors import ConfigError, MessageError, MessageTooLarge

logger = logging.getLogger(__name__)

#: Message fields that may hold arbitrary user values, cleaned like segment's `clean()` does.
PAYLOAD_FIELDS: Final = ("properties", "traits", "context", "integrations")
_DROP: Final = object()


@contextlib.contextmanager
def segment_errors() -> Iterator[None]:
    """Raise what segment raises for bad arguments: AssertionError, RuntimeError when too large.

    The message is trackline's, which names the field.
    """
    try:
        yield
    except MessageTooLarge as exc:
        raise RuntimeError(str(exc)) from exc
    except (MessageError, ConfigError) as exc:
        raise AssertionError(str(exc)) from exc


def proxy_for(proxies: Mapping[str, str] | str | None, host: str) -> str | None:
    """The proxy URL for `host` from a requests-style `{"https": url}` mapping (or a URL)."""
    if proxies is None or isinstance(proxies, str):
        return proxies
    scheme = urllib.parse.urlsplit(host).scheme
    return proxies.get(scheme) or proxies.get("all")


def stringify_id(value: Any) -> Any:
    """Ids may be numbers in segment's API; they go out as strings."""
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value)
    return value


def cleaned_payload(msg: dict[str, Any]) -> dict[str, Any] | None:
    """`msg` with the values JSON cannot hold dropped (with a warning) and bytes decoded, as
    segment's `clean()` does; None when there was nothing to clean."""
    cleaned = dict(msg)
    for field in PAYLOAD_FIELDS:
        value = msg.get(field)
        if isinstance(value, Mapping):
            cleaned[field] = _clean(value, field)
    return None if cleaned == msg else cleaned


def _clean(value: Any, path: str) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("dropped %s: bytes that are not UTF-8", path)
            return _DROP
    if isinstance(value, Mapping):
        items = ((key, _clean(item, f"{path}.{key}")) for key, item in value.items())
        return {key: item for key, item in items if item is not _DROP}
    if isinstance(value, (list, tuple, set, frozenset)):
        cleaned = [_clean(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return _DROP if any(item is _DROP for item in cleaned) else cleaned
    try:
        dumps(value)
    except TypeError:
        logger.warning(
            "dropped %s: a value of type %s cannot be encoded as JSON", path, type(value).__name__
        )
        return _DROP
    return value
