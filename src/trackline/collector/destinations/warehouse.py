"""The `postgres` kind: load events into a PostgreSQL schema laid out as Segment's warehouses
(`warehouse_schema.py`), with psycopg 3.

One transaction per batch: missing tables and columns are added (DDL is transactional in
PostgreSQL, so a failed batch leaves no half-made column behind), each table's rows go into a
temporary staging table with COPY, then into the table with `ON CONFLICT (id) DO NOTHING`, so
a batch loaded again (at-least-once delivery) adds nothing; `users` is upserted with the
latest non-null traits. A batch that PostgreSQL refuses for its data (a value out of range,
say) is split in halves until the one bad event is found: it fails alone, the rest load.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import sql

from trackline.collector.destinations import warehouse_schema as ws
from trackline.collector.destinations.config import WarehouseSettings
from trackline.collector.destinations.sender import DELIVERED, Result, Verdict, unanswered
from trackline.collector.store import Job

logger = logging.getLogger(__name__)

#: What information_schema calls a column type -> the type values are fitted to.
_KNOWN_TYPES: Final = {
    "text": ws.TEXT,
    "character varying": ws.TEXT,
    "numeric": ws.NUMERIC,
    "bigint": ws.NUMERIC,
    "integer": ws.NUMERIC,
    "smallint": ws.NUMERIC,
    "double precision": ws.NUMERIC,
    "real": ws.NUMERIC,
    "boolean": ws.BOOLEAN,
    "timestamp with time zone": ws.TIMESTAMP,
    "timestamp without time zone": ws.TIMESTAMP,
}


class WarehouseSender:
    """Loads batches over one connection of its own, reconnecting after a failure."""

    def __init__(self, settings: WarehouseSettings, *, timeout: float) -> None:
        self._dsn = settings.dsn
        self._schema = settings.schema
        self._timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None
        #: table -> column -> type, as committed in the database.
        self._columns: dict[str, dict[str, str]] = {}

    # -- connection ----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        statement_ms = int(max(self._timeout, 30.0) * 1000)
        conn = psycopg.connect(
            self._dsn,
            connect_timeout=max(1, round(self._timeout)),
            options=f"-c statement_timeout={statement_ms}",
        )
        try:
            schema = sql.Identifier(self._schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.commit()
            self._columns = self._read_columns(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _read_columns(self, conn: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
        columns: dict[str, dict[str, str]] = {}
        for table, column, data_type in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s",
            (self._schema,),
        ):
            columns.setdefault(table, {})[column] = _KNOWN_TYPES.get(data_type, ws.TEXT)
        conn.commit()
        return columns

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    # -- sending -------------------------------------------------------------------------

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        return self._load([orjson.loads(job.body) for job in jobs])

    def _load(self, messages: list[dict[str, Any]]) -> list[Result]:
        try:
            conn = self._connection()
        except psycopg.Error as exc:
            self._drop_connection()
            return [unanswered(_describe(exc))] * len(messages)
        working = {table: dict(columns) for table, columns in self._columns.items()}
        try:
            self._write(conn, messages, working)
            conn.commit()
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            conn.rollback()
            if len(messages) == 1:
                return [Result(Verdict.FAILED, _describe(exc))]
            middle = len(messages) // 2
            return self._load(messages[:middle]) + self._load(messages[middle:])
        except psycopg.OperationalError as exc:
            self._drop_connection()
            answered = not isinstance(exc, psycopg.errors.ConnectionTimeout)
            return [Result(Verdict.RETRY, _describe(exc), answered=answered)] * len(messages)
        except psycopg.Error as exc:
            # A table or column another process added or dropped meanwhile: read them again.
            self._drop_connection()
            return [Result(Verdict.RETRY, _describe(exc))] * len(messages)
        self._columns = working
        return [DELIVERED] * len(messages)

    def _write(
        self,
        conn: psycopg.Connection[Any],
        messages: Iterable[Mapping[str, Any]],
        working: dict[str, dict[str, str]],
    ) -> None:
        by_table: dict[str, list[ws.TableRow]] = {}
        for message in messages:
            for row in ws.rows(message):
                by_table.setdefault(row.table, []).append(row)
        discards: list[tuple[Any, ...]] = []
        for number, (table, rows) in enumerate(by_table.items()):
            columns = self._ensure(conn, table, rows, working)
            values = [self._fit(table, row, columns, discards) for row in rows]
            if table == "users":
                values = _latest_per_user(values)
            self._copy(conn, table, values, number, upsert=table == "users")
        if discards:
            self._ensure_table(conn, "discards", ws.DISCARDS_COLUMNS, working, key=None)
            with conn.cursor() as cursor:
                cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {}.discards (row_id, table_name, column_name, column_type, "
                        "value, received_at) VALUES (%s, %s, %s, %s, %s, %s)"
                    ).format(sql.Identifier(self._schema)),
                    discards,
                )

    # -- tables and columns --------------------------------------------------------------

    def _ensure_table(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        fixed: Mapping[str, str],
        working: dict[str, dict[str, str]],
        key: str | None = "id",
    ) -> dict[str, str]:
        columns = working.get(table)
        if columns is not None:
            return columns
        definitions: list[sql.Composable] = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(ws.SQL_TYPES[kind]),
                sql.SQL(" PRIMARY KEY" if name == key else ""),
            )
            for name, kind in fixed.items()
        ]
        definitions.append(sql.SQL("uuid_ts timestamptz DEFAULT now()"))
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
                sql.Identifier(self._schema), sql.Identifier(table), sql.SQL(", ").join(definitions)
            )
        )
        columns = working[table] = {**fixed, "uuid_ts": ws.TIMESTAMP}
        return columns

    def _ensure(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        rows: list[ws.TableRow],
        working: dict[str, dict[str, str]],
    ) -> dict[str, str]:
        columns = self._ensure_table(conn, table, rows[0].fixed, working)
        for row in rows:
            for column, value in row.values.items():
                if column not in columns:
                    kind = row.fixed.get(column) or ws.infer(value)
                    conn.execute(
                        sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}").format(
                            sql.Identifier(self._schema),
                            sql.Identifier(table),
                            sql.Identifier(column),
                            sql.SQL(ws.SQL_TYPES[kind]),
                        )
                    )
                    columns[column] = kind
        return columns

    @staticmethod
    def _fit(
        table: str, row: ws.TableRow, columns: Mapping[str, str], discards: list[tuple[Any, ...]]
    ) -> dict[str, Any]:
        fitted: dict[str, Any] = {}
        for column, value in row.values.items():
            kind = columns[column]
            # The common cases first, without a call: this runs for every value loaded.
            if kind == ws.TEXT and type(value) is str:
                fitted[column] = value.replace("\x00", "") if "\x00" in value else value
                continue
            if kind == ws.NUMERIC and type(value) in (int, float):
                fitted[column] = value
                continue
            if column in ws.STORED_TIMESTAMPS and kind == ws.TIMESTAMP:
                fitted[column] = value
                continue
            stored = ws.coerce(value, kind)
            if ws.fits(stored):
                fitted[column] = stored
            else:
                text = value if isinstance(value, str) else orjson.dumps(value).decode()
                discards.append(
                    (row.values.get("id"), table, column, kind, text, row.values.get("received_at"))
                )
        return fitted

    def _copy(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        values: list[dict[str, Any]],
        number: int,
        *,
        upsert: bool,
    ) -> None:
        names = sorted({column for row in values for column in row})
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        stage = sql.Identifier(f"trackline_stage_{number}")
        target = sql.SQL("{}.{}").format(sql.Identifier(self._schema), sql.Identifier(table))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target))
        with conn.cursor() as cursor:
            with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)) as copy:
                for row in values:
                    copy.write_row([row.get(name) for name in names])
            if upsert:
                updates = sql.SQL(", ").join(
                    sql.SQL("{0} = coalesce(EXCLUDED.{0}, {1}.{0})").format(
                        sql.Identifier(name), sql.Identifier(table)
                    )
                    for name in names
                    if name != "id"
                )
                conflict: sql.Composable = sql.SQL("DO UPDATE SET {}").format(updates)
            else:
                conflict = sql.SQL("DO NOTHING")
            cursor.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (id) {}").format(
                    target, columns, columns, stage, conflict
                )
            )

    def ready(self) -> bool:
        return True

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self._drop_connection()


def _latest_per_user(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per user id, later traits over earlier ones (an upsert may touch a row once)."""
    merged: dict[Any, dict[str, Any]] = {}
    for row in values:
        merged.setdefault(row["id"], {}).update(row)
    return list(merged.values())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
