"""The `integrations` rules, as Segment and RudderStack read them, with `types` and
`enabled`: one test per rule."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.collector.destinations.conftest import destinations
from trackline.collector.destinations import Routing

ROUTING = Routing(
    destinations(
        {"name": "Hook", "kind": "webhook", "url": "http://h"},
        {"name": "Files", "kind": "file", "path": "x"},
        {"name": "Tracks", "kind": "file", "path": "y", "types": ["track"]},
        {"name": "Off", "kind": "file", "path": "z", "enabled": False},
    )
)


@pytest.mark.parametrize(
    ("integrations", "route"),
    [
        (None, ("Hook", "Files", "Tracks")),
        ({}, ("Hook", "Files", "Tracks")),
        ({"All": True}, ("Hook", "Files", "Tracks")),
        ({"All": False}, ()),
        ({"All": False, "Hook": True}, ("Hook",)),
        ({"Hook": False}, ("Files", "Tracks")),
        ({"All": False, "Files": {"folder": "a"}}, ("Files",)),
        ({"All": True, "Files": False, "Tracks": {}}, ("Hook", "Tracks")),
        ({"hook": False}, ("Hook", "Files", "Tracks")),
        ({"All": False, "hook": True}, ()),
        ({"All": False, "Hook": None}, ()),
        ({"All": False, "Hook": "yes"}, ()),
        ({"All": False, "Off": True}, ()),
        ({"Segment.io": False}, ("Hook", "Files", "Tracks")),
    ],
)
def test_integrations_select_destinations(integrations: Any, route: tuple[str, ...]) -> None:
    assert ROUTING.route("track", integrations) == route


@pytest.mark.parametrize("integrations", [["Hook"], "All", 1, True, {"All": "false"}, {"All": 0}])
def test_malformed_integrations_route_nowhere(integrations: Any) -> None:
    """Not an object, or an `All` that is not a boolean: None (stored, routed nowhere)."""
    assert ROUTING.route("track", integrations) is None


def test_types_limit_what_a_destination_gets() -> None:
    assert ROUTING.route("identify", None) == ("Hook", "Files")
    assert ROUTING.route("identify", {"All": False, "Tracks": True}) == ()


def test_selects_reads_a_stored_message_for_replays() -> None:
    def body(**fields: Any) -> str:
        return orjson.dumps({"type": "track", "event": "E", **fields}).decode()

    assert ROUTING.selects("Hook", body())
    assert not ROUTING.selects("Hook", body(integrations={"Hook": False}))
    assert ROUTING.selects("Off", body())  # a disabled destination can still be backfilled
    assert not ROUTING.selects("Tracks", body(type="page"))
    assert not ROUTING.selects("Hook", body(integrations=[1]))
    assert not ROUTING.selects("Unknown", body())
