"""The postgres kind against the real PostgreSQL: Segment's tables and columns, inferred types,
columns added as properties appear, `users` with the latest traits, a reload adds nothing,
a value that does not fit its column kept in `discards`, one bad event failing alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import deliveries, destinations, drained, post
from tests.collector.destinations.pg import DSN, connect
from trackline.collector import RunningCollector
from trackline.collector.destinations import warehouse_schema as ws
from trackline.collector.destinations.config import WarehouseSettings
from trackline.collector.destinations.sender import DELIVERED, Verdict
from trackline.collector.destinations.warehouse import WarehouseSender
from trackline.collector.store import Job

Start = Callable[..., tuple[RunningCollector, Http]]
STAMP = "2026-11-28T14:00:00.000Z"


def stored(**fields: Any) -> dict[str, Any]:
    return {
        "messageId": "m-1",
        "timestamp": STAMP,
        "receivedAt": STAMP,
        "sentAt": STAMP,
        "originalTimestamp": STAMP,
        "userId": "u-1",
        "context": {"ip": "10.0.0.1", "library": {"name": "trackline", "version": "1"}},
        **fields,
    }


def track(n: int, event: str = "Item Purchased", **properties: Any) -> dict[str, Any]:
    return stored(type="track", messageId=f"m-{n}", event=event, properties=properties)


def jobs(*messages: dict[str, Any]) -> list[Job]:
    return [
        Job("Warehouse", n, m["messageId"], orjson.dumps(m).decode(), 0, 0, None, 1)
        for n, m in enumerate(messages)
    ]


def columns(schema: str, table: str) -> dict[str, str]:
    with connect() as conn:
        return dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
        )


def select(schema: str, query: str) -> list[tuple[Any, ...]]:
    with connect() as conn:
        return conn.execute(query.replace("S.", f'"{schema}".')).fetchall()


@pytest.fixture
def sender(pg_schema: str) -> WarehouseSender:
    loader = WarehouseSender(WarehouseSettings(DSN, pg_schema), timeout=5.0)
    yield loader  # type: ignore[misc]
    loader.close()


# -- the layout, without a database --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("Item Purchased", "item_purchased"),
        ("orderId", "order_id"),
        ("HTTPStatus", "http_status"),
        ("Signed Up!", "signed_up"),
        ("3 Things", "_3_things"),
        ("", "_"),
        ("x" * 80, "x" * 63),
    ],
)
def test_names_go_to_snake_case(name: str, snake: str) -> None:
    assert ws.snake(name) == snake


def test_a_track_is_a_tracks_row_and_a_row_of_its_event_table() -> None:
    tracks, event = ws.rows(track(1, revenue=39.95, cart={"size": 2, "items": ["a", "b"]}))
    assert tracks.table == "tracks"
    assert tracks.values["event"] == "item_purchased"
    assert tracks.values["event_text"] == "Item Purchased"
    assert tracks.values["context_library_name"] == "trackline"
    assert "revenue" not in tracks.values
    assert event.table == "item_purchased"
    assert event.values["revenue"] == 39.95
    assert event.values["cart_size"] == 2
    assert event.values["cart_items"] == '["a","b"]'


def test_properties_named_like_standard_columns_are_renamed() -> None:
    _, event = ws.rows(track(1, id="p-9", timestamp="x", user_id="other"))
    assert event.values["id"] == "m-1"
    assert event.values["properties_id"] == "p-9"
    assert event.values["properties_user_id"] == "other"


def test_an_event_named_like_a_standard_table_gets_its_own() -> None:
    assert ws.event_table("Users") == "_users"
    assert ws.event_table("Tracks") == "_tracks"


def test_an_identify_is_an_identifies_row_and_the_users_row() -> None:
    identifies, users = ws.rows(stored(type="identify", traits={"email": "a@b.c", "plan": None}))
    assert identifies.values["email"] == "a@b.c"
    assert "plan" not in identifies.values
    assert users.table == "users"
    assert users.values == {"id": "u-1", "received_at": STAMP, "email": "a@b.c"}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, ws.BOOLEAN),
        (3, ws.NUMERIC),
        (2.5, ws.NUMERIC),
        ("2026-11-28T14:00:00Z", ws.TIMESTAMP),
        ("2026-11-28 14:00:00+01:00", ws.TIMESTAMP),
        ("2026-13-45T99:00:00Z", ws.TEXT),
        ("hello", ws.TEXT),
    ],
)
def test_types_are_inferred(value: Any, kind: str) -> None:
    assert ws.infer(value) == kind


# -- loading into PostgreSQL ---------------------------------------------------------------


def test_every_call_type_lands_in_its_table(sender: WarehouseSender, pg_schema: str) -> None:
    messages = [
        track(1, revenue=39.95, shipping="2-day"),
        stored(type="identify", messageId="m-2", traits={"email": "tom@initech.com", "age": 29}),
        stored(type="page", messageId="m-3", name="Login", properties={"path": "/login"}),
        stored(type="screen", messageId="m-4", name="Register", properties={"kind": "fb"}),
        stored(type="group", messageId="m-5", groupId="initech", traits={"employees": 30}),
        stored(type="alias", messageId="m-6", previousId="anon-1"),
    ]
    assert sender.send(jobs(*messages)) == [DELIVERED] * 6
    tracks = columns(pg_schema, "tracks")
    assert tracks["id"] == "text"
    assert tracks["received_at"] == "timestamp with time zone"
    assert tracks["context_ip"] == "text"
    assert "revenue" not in tracks
    purchased = columns(pg_schema, "item_purchased")
    assert purchased["revenue"] == "numeric"
    assert purchased["shipping"] == "text"
    assert select(pg_schema, "SELECT revenue::text, event_text FROM S.item_purchased") == [
        ("39.95", "Item Purchased")
    ]
    assert select(pg_schema, "SELECT id, email, age::int FROM S.users") == [
        ("u-1", "tom@initech.com", 29)
    ]
    assert select(pg_schema, "SELECT name, path FROM S.pages") == [("Login", "/login")]
    assert select(pg_schema, "SELECT name, kind FROM S.screens") == [("Register", "fb")]
    assert select(pg_schema, "SELECT group_id, employees::int FROM S.groups") == [("initech", 30)]
    assert select(pg_schema, "SELECT previous_id, user_id FROM S.aliases") == [("anon-1", "u-1")]
    (primary,) = select(
        pg_schema,
        "SELECT count(*) FROM information_schema.table_constraints "
        f"WHERE table_schema = '{pg_schema}' AND table_name = 'tracks' "
        "AND constraint_type = 'PRIMARY KEY'",
    )
    assert primary == (1,)


def test_loading_a_batch_again_adds_nothing(sender: WarehouseSender, pg_schema: str) -> None:
    batch = jobs(track(1), track(2))
    sender.send(batch)
    sender.send(batch)
    assert select(pg_schema, "SELECT count(*) FROM S.tracks") == [(2,)]
    assert select(pg_schema, "SELECT count(*) FROM S.item_purchased") == [(2,)]


def test_a_new_property_adds_a_column(sender: WarehouseSender, pg_schema: str) -> None:
    sender.send(jobs(track(1, revenue=1)))
    sender.send(jobs(track(2, coupon="WINTER", paid=True)))
    found = columns(pg_schema, "item_purchased")
    assert (found["coupon"], found["paid"]) == ("text", "boolean")
    assert select(
        pg_schema, "SELECT id, revenue::int, coupon FROM S.item_purchased ORDER BY id"
    ) == [
        ("m-1", 1, None),
        ("m-2", None, "WINTER"),
    ]


def test_users_keep_the_latest_traits(sender: WarehouseSender, pg_schema: str) -> None:
    def identify(n: int, **traits: Any) -> dict[str, Any]:
        return stored(type="identify", messageId=f"m-{n}", traits=traits)

    sender.send(jobs(identify(1, plan="free", email="a@b.c")))
    sender.send(jobs(identify(2, plan="pro"), identify(3, plan="team", seats=5)))
    assert select(pg_schema, "SELECT id, plan, email, seats::int FROM S.users") == [
        ("u-1", "team", "a@b.c", 5)
    ]
    assert select(pg_schema, "SELECT count(*) FROM S.identifies") == [(3,)]


def test_a_value_that_does_not_fit_its_column_is_kept_in_discards(
    sender: WarehouseSender, pg_schema: str
) -> None:
    sender.send(jobs(track(1, revenue=10)))
    assert sender.send(jobs(track(2, revenue="a lot"))) == [DELIVERED]
    assert select(pg_schema, "SELECT id, revenue FROM S.item_purchased WHERE id = 'm-2'") == [
        ("m-2", None)
    ]
    assert select(
        pg_schema, "SELECT row_id, table_name, column_name, column_type, value FROM S.discards"
    ) == [("m-2", "item_purchased", "revenue", "numeric", "a lot")]


def test_one_bad_event_fails_alone(sender: WarehouseSender, pg_schema: str) -> None:
    """PostgreSQL refuses a numeric it cannot hold: that event fails, the batch's others load."""
    results = sender.send(jobs(track(1, revenue=1), track(2, revenue="1e999999"), track(3)))
    assert [r.verdict for r in results] == [Verdict.DELIVERED, Verdict.FAILED, Verdict.DELIVERED]
    assert results[1].error == "NumericValueOutOfRange: value overflows numeric format"
    assert select(pg_schema, "SELECT id FROM S.tracks ORDER BY id") == [("m-1",), ("m-3",)]


def test_nul_characters_are_dropped_not_refused(sender: WarehouseSender, pg_schema: str) -> None:
    assert sender.send(jobs(track(1, note="a\x00b"))) == [DELIVERED]
    assert select(pg_schema, "SELECT note FROM S.item_purchased") == [("ab",)]


def test_an_unreachable_database_is_a_retry_without_an_answer(pg_schema: str) -> None:
    loader = WarehouseSender(
        WarehouseSettings("postgresql://postgres@127.0.0.1:9/test", pg_schema), timeout=1.0
    )
    (result,) = loader.send(jobs(track(1)))
    assert result.verdict is Verdict.RETRY
    assert not result.answered
    loader.close()


def test_the_collector_loads_what_it_routes_to_the_warehouse(start: Start, pg_schema: str) -> None:
    _, http = start(
        destinations({"name": "Warehouse", "kind": "postgres", "dsn": DSN, "schema": pg_schema})
    )
    post(
        http,
        [
            {
                "type": "track",
                "userId": "u",
                "event": "Signed Up",
                "messageId": "a",
                "properties": {"plan": "pro"},
            },
            {"type": "identify", "userId": "u", "messageId": "b", "traits": {"name": "Tom"}},
        ],
    )
    drained(http)
    assert deliveries(http, "a")["Warehouse"]["status"] == "delivered"
    assert select(pg_schema, "SELECT plan FROM S.signed_up") == [("pro",)]
    assert select(pg_schema, "SELECT name FROM S.users") == [("Tom",)]
