"""A ledger for the collector's destinations: for every acknowledged event and every
destination, whether `integrations` selected it, and what each destination received.

`settle()` compares the acknowledged events with the collector's store (each stored once) and
with what each destination got (every selected event at least once, or exactly once for a
healthy run; never one it did not select) and returns one line of figures per destination;
`assert_exact()` fails with those lines when anything is off.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from trackline.collector.destinations import DestinationConfig, Routing


@dataclasses.dataclass(frozen=True)
class Line:
    """One destination's figures."""

    destination: str
    selected: int
    received: int
    missing: tuple[str, ...]
    repeated: int
    stray: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.destination}: selected={self.selected} received={self.received} "
            f"missing={len(self.missing)} repeated={self.repeated} stray={len(self.stray)}"
        )


@dataclasses.dataclass(frozen=True)
class Settled:
    acknowledged: int
    stored_missing: tuple[str, ...]
    stored_twice: int
    lines: tuple[Line, ...]

    def __str__(self) -> str:
        head = (
            f"acknowledged={self.acknowledged} stored_missing={len(self.stored_missing)} "
            f"stored_twice={self.stored_twice}"
        )
        return "; ".join([head, *map(str, self.lines)])

    def assert_exact(self, *, exactly_once: bool) -> None:
        problems = [
            bool(self.stored_missing),
            bool(self.stored_twice),
            *(bool(line.missing) or bool(line.stray) for line in self.lines),
        ]
        if exactly_once:
            problems += [bool(line.repeated) for line in self.lines]
        assert not any(problems), str(self)


class DeliveryLedger:
    """Records acknowledged events; knows which destination each one is owed to."""

    def __init__(self, configs: Iterable[DestinationConfig]) -> None:
        self._routing = Routing(list(configs))
        self.acknowledged: dict[str, tuple[str, ...]] = {}

    def acknowledge(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """These messages were answered 200: each is owed to its route's destinations."""
        for message in messages:
            route = self._routing.route(message["type"], message.get("integrations")) or ()
            self.acknowledged[message["messageId"]] = route

    def selected(self, destination: str) -> set[str]:
        return {mid for mid, route in self.acknowledged.items() if destination in route}

    def settle(self, stored_ids: Iterable[str], received: Mapping[str, Iterable[str]]) -> Settled:
        """`stored_ids`: the store's messageIds (one per row); `received[destination]`: every
        messageId the destination got, repeats included."""
        stored = collections.Counter(stored_ids)
        lines = []
        for destination, ids in received.items():
            got = collections.Counter(ids)
            wanted = self.selected(destination)
            lines.append(
                Line(
                    destination,
                    len(wanted),
                    sum(got.values()),
                    tuple(sorted(wanted - set(got))),
                    sum(count - 1 for count in got.values()),
                    tuple(sorted(set(got) - wanted)),
                )
            )
        return Settled(
            len(self.acknowledged),
            tuple(sorted(set(self.acknowledged) - set(stored))),
            sum(count - 1 for count in stored.values() if count > 1),
            tuple(lines),
        )
