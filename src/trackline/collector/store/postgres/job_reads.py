"""What the destinations' views read from the PostgreSQL job tables: counts by state per
destination (summed deltas) and where one event stands with each destination."""

from __future__ import annotations

from typing import Any

import psycopg

from trackline.collector.store.jobs import DestinationCounts, EventDelivery, JobStatus
from trackline.collector.store.postgres.job_rows import ISO, status_of
from trackline.collector.store.postgres.schema import SCHEMA


def destination_counts(conn: psycopg.Connection[Any]) -> list[DestinationCounts]:
    """Every destination's counts, by name (one statement, one snapshot)."""
    rows = conn.execute(
        "SELECT d.name, coalesce(sum(c.pending), 0), coalesce(sum(c.retrying), 0), "
        "coalesce(sum(c.delivered), 0), coalesce(sum(c.failed), 0), "
        "(array_agg(c.last_error ORDER BY c.last_error_at DESC NULLS LAST))[1], "
        f"{ISO.format('max(c.last_error_at)')}, {ISO.format('max(c.last_success_at)')} "
        f"FROM {SCHEMA}.destinations AS d LEFT JOIN {SCHEMA}.job_counts AS c "
        "ON c.destination = d.id GROUP BY d.name ORDER BY d.name"
    ).fetchall()
    return [
        DestinationCounts(
            name,
            int(pending),
            int(retrying),
            int(delivered),
            int(failed),
            error,
            error_at,
            ok_at,
        )
        for name, pending, retrying, delivered, failed, error, error_at, ok_at in rows
    ]


def deliveries(conn: psycopg.Connection[Any], message_id: str) -> list[EventDelivery] | None:
    """Where one event stands with each destination it was queued for: its newest job's
    newest status per destination."""
    rows = conn.execute(
        "SELECT e.id, d.name, st.state, coalesce(st.attempts, 0), st.error, "
        f"{ISO.format('st.at')} "
        f"FROM (SELECT id FROM {SCHEMA}.events WHERE message_id = %s "
        "ORDER BY id DESC LIMIT 1) AS e "
        "LEFT JOIN LATERAL (SELECT DISTINCT ON (destination) destination, id "
        f"FROM {SCHEMA}.jobs WHERE event_id = e.id ORDER BY destination, id DESC) AS j "
        f"ON true LEFT JOIN {SCHEMA}.destinations AS d ON d.id = j.destination "
        f"LEFT JOIN LATERAL (SELECT state, attempts, error, at FROM {SCHEMA}.job_status AS s "
        "WHERE s.destination = j.destination AND s.job_id = j.id ORDER BY s.seq DESC LIMIT 1"
        ") AS st ON true",
        (message_id,),
    ).fetchall()
    if not rows:
        return None
    found = []
    for _, name, state, attempts, error, at in rows:
        if name is None:
            continue  # the event has no job
        status = status_of(state, attempts)
        delivered = status is JobStatus.DELIVERED
        found.append(EventDelivery(name, status, attempts, error, at if delivered else None))
    return sorted(found, key=lambda delivery: delivery.destination)
