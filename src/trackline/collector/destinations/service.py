"""A collector's destinations as one object: the routing rules ingest applies, one router per
enabled destination, and what the read API shows about them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trackline.collector.destinations.config import (
    DestinationConfig,
    FileSettings,
    TrackingApiSettings,
    WarehouseSettings,
    WebhookSettings,
)
from trackline.collector.destinations.router import Pacer, Router
from trackline.collector.destinations.routing import Routing
from trackline.collector.destinations.sender import Sender
from trackline.collector.store import Store

logger = logging.getLogger(__name__)


def sender_factory(config: DestinationConfig) -> Callable[[], Sender]:
    """Makes the senders of one destination (one per router worker)."""
    settings = config.settings
    if isinstance(settings, WebhookSettings):
        from trackline.collector.destinations.webhook import WebhookSender

        return lambda: WebhookSender(settings, timeout=config.timeout, batch_size=config.batch_size)
    if isinstance(settings, TrackingApiSettings):
        from trackline.collector.destinations.tracking_api import TrackingApiSender

        return lambda: TrackingApiSender(
            settings, timeout=config.timeout, batch_size=config.batch_size
        )
    if isinstance(settings, FileSettings):
        from trackline.collector.destinations.files import FileSender

        return lambda: FileSender(settings)
    assert isinstance(settings, WarehouseSettings)
    from trackline.collector.destinations.warehouse import WarehouseSender

    return lambda: WarehouseSender(settings, timeout=config.timeout)


class Destinations:
    """The configured destinations of one collector; `start()` them once the store is open,
    `stop()` them before it closes."""

    def __init__(
        self,
        configs: Sequence[DestinationConfig],
        *,
        factory: Callable[[DestinationConfig], Callable[[], Sender]] = sender_factory,
    ) -> None:
        self.configs = list(configs)
        self.routing = Routing(self.configs)
        self._factory = factory
        self._routers: dict[str, Router] = {}
        #: Set by the app: whether ingest has requests waiting, so routers yield to it.
        self.ingest_busy: Callable[[], bool] | None = None

    def __bool__(self) -> bool:
        return bool(self.configs)

    def start(self, store: Store) -> None:
        pacer = Pacer(self.ingest_busy)
        for config in self.configs:
            if config.enabled:
                router = Router(config, store, self._factory(config), pacer=pacer)
                router.start()
                self._routers[config.name] = router

    def wake(self, routes: Iterable[tuple[str, ...] | None]) -> None:
        """Jobs were queued along `routes`: wake their routers."""
        woken: set[str] = set()
        for route in routes:
            if route:
                for name in route:
                    if name not in woken:
                        woken.add(name)
                        router = self._routers.get(name)
                        if router is not None:
                            router.wake()

    def wake_all(self) -> None:
        for router in self._routers.values():
            router.wake()

    def stop(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for router in self._routers.values():
            router.halt()
        for name, router in self._routers.items():
            if not router.stop(deadline):
                logger.warning("destination %s: still sending when stopping; left it", name)
        self._routers.clear()

    def describe(self) -> dict[str, dict[str, Any]]:
        """name -> {kind, enabled, down} for the read API (no settings: they hold secrets)."""
        described: dict[str, dict[str, Any]] = {}
        for config in self.configs:
            router = self._routers.get(config.name)
            described[config.name] = {
                "kind": config.kind,
                "enabled": config.enabled,
                "down": bool(router is not None and router.health.down),
            }
        return described
