"""The read and replay API of destinations:

- `GET /api/destinations`: `[{name, kind, enabled, down, delivered, pending, retrying, failed,
  last_error, last_error_at, last_success_at}]`, configured destinations first (in config order),
  then any the store still has jobs or outcomes for that the config no longer names (`kind`
  null);
- `GET /api/events/{messageId}/deliveries`: `[{destination, status, attempts, last_error,
  delivered_at}]`, 404 for an unknown event;
- `POST /api/destinations/{name}/replay?failed=1&since=ISO`: queue stored events again (the
  dead letters only with `failed`).

The reads are reads like `/api/events` (the read token, or this machine); a replay changes
what the collector does, so it is asked for as `DELETE /api/events` is: by a reader on this
machine, from the collector's own page or an allowed origin.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trackline.collector import answers
from trackline.collector.ingest import format_timestamp, parse_timestamp
from trackline.collector.reading import message_id_refusal
from trackline.collector.store import StorageError

if TYPE_CHECKING:
    from trackline.collector.app import _Collector


def routes(collector: _Collector) -> list[Route]:
    """The routes, bound to `collector`; `/api/events/{id}/deliveries` must come before the
    route of one event, whose path converter would take it."""
    reads = collector.read_api

    async def destinations(request: Request) -> Response:
        async with reads._reading(request) as refused:
            if refused is not None:
                return refused
            counted = await run_in_threadpool(collector.storage.destination_counts)
        described = collector.destinations.describe()
        by_name = {counts.name: counts for counts in counted}
        listed: list[dict[str, Any]] = []
        for name in [*described, *(n for n in by_name if n not in described)]:
            counts = by_name.get(name)
            about = described.get(name, {"kind": None, "enabled": False, "down": False})
            listed.append(
                {
                    "name": name,
                    **about,
                    "delivered": counts.delivered if counts else 0,
                    "pending": counts.pending if counts else 0,
                    "retrying": counts.retrying if counts else 0,
                    "failed": counts.failed if counts else 0,
                    "last_error": counts.last_error if counts else None,
                    "last_error_at": counts.last_error_at if counts else None,
                    "last_success_at": counts.last_success_at if counts else None,
                }
            )
        return answers.json_answer(listed)

    async def deliveries(request: Request) -> Response:
        async with reads._reading(request) as refused:
            if refused is not None:
                return refused
            message_id = request.path_params["message_id"]
            if (refusal := message_id_refusal(message_id)) is not None:
                return refusal
            found = await run_in_threadpool(collector.storage.deliveries, message_id)
        if found is None:
            return answers.error(404, "not_found", f"no event with messageId {message_id[:100]!r}")
        return answers.json_answer([dataclasses.asdict(delivery) for delivery in found])

    async def replay(request: Request) -> Response:
        refused = reads.local_admin_refusal(request, "replays can be asked for")
        if refused is not None:
            return refused
        name = request.path_params["name"]
        configured = {config.name for config in collector.destinations.configs}
        if name not in configured:
            return answers.error(
                404, "not_found", f"no destination named {name[:100]!r} is configured"
            )
        params = request.query_params
        try:
            failed_only = answers.flag(params.get("failed"))
        except ValueError as exc:
            return answers.error(400, "invalid_parameter", f"failed {exc}")
        try:
            moment = parse_timestamp(params.get("since") or None)
        except ValueError as exc:
            return answers.error(400, "invalid_parameter", f"since: {exc}")
        since = None if moment is None else format_timestamp(moment)
        run = functools.partial(
            collector.storage.replay,
            name,
            failed_only=failed_only,
            since=since,
            selects=functools.partial(collector.destinations.routing.selects, name),
        )
        try:
            queued = await run_in_threadpool(run)
        except StorageError:
            return answers.unavailable()
        collector.destinations.wake_all()
        return answers.json_answer({"destination": name, "queued": queued})

    return [
        Route("/api/destinations", destinations, methods=["GET"]),
        Route("/api/destinations/{name}/replay", replay, methods=["POST"]),
        Route("/api/events/{message_id:path}/deliveries", deliveries, methods=["GET"]),
    ]
