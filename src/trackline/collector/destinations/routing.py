"""Which destinations a stored event is owed to: the `integrations` rules, as Segment and
RudderStack read them, and each destination's `enabled` and `types`.

- `integrations` missing (or `{}`): every destination;
- `All` missing means true; `All` sets the default for every destination not named;
- a destination named with `true`/`false` is on/off whatever `All` says; named with an object,
  it is on (the object is its options, and stays in the message for it to read); named with
  anything else (null, a string, a number), it is as if not named;
- names are case-sensitive: `"webhook"` does not name the destination `Webhook`;
- `integrations` that is not an object, or an `All` that is not a boolean, is malformed: the
  event is stored and routed nowhere, and counted (`Stats.unroutable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from trackline.collector.destinations.config import DestinationConfig
from trackline.collector.ingest import MESSAGE_TYPES

_UNNAMED: Final = object()


def _on(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return True
    return default


def selected(name: str, integrations: Mapping[str, Any], default: bool) -> bool:
    """Whether `integrations` (an object whose `All` is `default`) selects `name`."""
    return _on(integrations.get(name, _UNNAMED), default)


class Routing:
    """The routing of one collector: its enabled destinations, in config order."""

    def __init__(self, destinations: Sequence[DestinationConfig]) -> None:
        self._destinations = [(d.name, d.types) for d in destinations if d.enabled]
        self._types = {d.name: d.types for d in destinations}
        # Most messages carry no integrations: their route depends on the type alone.
        self._by_type = {
            kind: tuple(name for name, types in self._destinations if kind in types)
            for kind in MESSAGE_TYPES
        }

    def route(self, kind: str, integrations: Any) -> tuple[str, ...] | None:
        """The destinations a message of type `kind` with this `integrations` goes to, or
        None when `integrations` is malformed."""
        if integrations is None:
            return self._by_type[kind]
        if not isinstance(integrations, dict):
            return None
        default = integrations.get("All", True)
        if not isinstance(default, bool):
            return None
        if len(integrations) == ("All" in integrations) and default:
            return self._by_type[kind]
        return tuple(
            name
            for name, types in self._destinations
            if kind in types and selected(name, integrations, default)
        )

    def selects(self, name: str, body: str) -> bool:
        """Whether the stored message `body` (JSON) is owed to destination `name`, enabled or
        not: for replays."""
        types = self._types.get(name)
        if types is None:
            return False
        message = orjson.loads(body)
        kind = message.get("type")
        if kind not in types:
            return False
        integrations = message.get("integrations")
        if integrations is None:
            return True
        if not isinstance(integrations, dict):
            return False
        default = integrations.get("All", True)
        return isinstance(default, bool) and selected(name, integrations, default)
