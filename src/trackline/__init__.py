"""trackline: server-side analytics events, batched and delivered to a Segment-compatible API."""

from __future__ import annotations

import logging

from trackline._version import __version__

logging.getLogger("trackline").addHandler(logging.NullHandler())

__all__ = ["__version__"]
