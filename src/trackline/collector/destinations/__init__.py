"""Destinations: the collector routes every stored event to the destinations its
`integrations` selects (webhook, tracking-api, file, postgres warehouse), durably.

- `config.py` reads the `[[destination]]` tables of the config file;
- `routing.py` applies the `integrations` rules at ingest, so an event's jobs are written in
  the transaction that stores it;
- `router.py` runs one router per destination: claim jobs from the store, send, settle, with
  the retry rules of `policy.py`;
- `webhook.py`, `tracking_api.py`, `files.py`, `warehouse.py` send, one kind each
  (`sender.py` is what they implement);
- `service.py` puts them together for the app.
"""

from __future__ import annotations

from trackline.collector.destinations.config import (
    ConfigFileError,
    DestinationConfig,
    load,
    parse,
)
from trackline.collector.destinations.routing import Routing
from trackline.collector.destinations.service import Destinations

__all__ = [
    "ConfigFileError",
    "DestinationConfig",
    "Destinations",
    "Routing",
    "load",
    "parse",
]
