"""Store batches of deliveries in PostgreSQL, set-based, in one transaction each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.database import Database, connect_failure, translate
from bridge.errors import SinkMisconfigured, SinkUnavailable
from bridge.indoubt import TXID, InDoubt, Outcome, ask_status, batch_key, log_resolution
from bridge.model import Delivery, Row
from iotcommon.contract import RejectionCode

logger = logging.getLogger(__name__)

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS bridge_staging (
    seq integer, sensor_id integer, "timestamp" timestamptz,
    variable text, value double precision, unit text
) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = 'COPY bridge_staging (seq, sensor_id, "timestamp", variable, value, unit) FROM STDIN (FORMAT BINARY)'
_STAGING_TYPES = ["int4", "int4", "timestamptz", "text", "float8", "text"]
# DISTINCT ON keeps the first of several copies within one batch, so the
# later copies are judged against it like any other duplicate.
_INSERT = """
WITH inserted AS (
    INSERT INTO readings (sensor_id, "timestamp", variable, value, unit)
    SELECT DISTINCT ON (sensor_id, "timestamp", variable) sensor_id, "timestamp", variable, value, unit
    FROM bridge_staging ORDER BY sensor_id, "timestamp", variable, seq
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""
_CONFLICTS = """
SELECT s.seq, r.value, r.unit
FROM bridge_staging s JOIN readings r USING (sensor_id, "timestamp", variable)
WHERE s.value IS DISTINCT FROM r.value OR s.unit IS DISTINCT FROM r.unit
ORDER BY s.seq
"""
_COPY_REJECTED = (
    "COPY rejected_messages (received_at, topic, payload, reason_code, reason, client_id) FROM STDIN (FORMAT BINARY)"
)
_REJECTED_TYPES = ["timestamptz", "text", "bytea", "text", "text", "text"]
_PRIVILEGES = (
    "SELECT has_table_privilege('readings', 'INSERT'), "
    "has_table_privilege('rejected_messages', 'INSERT')"
)


class Sink(Protocol):
    """Where the pipeline stores batches."""

    def check(self) -> None: ...

    def write(self, batch: Sequence[Delivery]) -> WriteResult: ...


@dataclass(slots=True)
class WriteResult:
    """What one committed batch did."""

    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0

    def add(self, other: WriteResult) -> None:
        """Accumulate another result into this one."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.rejected += other.rejected


_RejectedRow = tuple[datetime, str, bytes, str, str, str]


@dataclass(slots=True)
class _Staged:
    rows: list[tuple[int, int, datetime, str, float, str]] = field(default_factory=list)
    origins: list[tuple[Delivery, int, Row]] = field(default_factory=list)
    rejected: list[_RejectedRow] = field(default_factory=list)


class PostgresSink:
    """Writes each batch with COPY into a staging table and one INSERT ... ON CONFLICT DO NOTHING.

    The pool is opened by the first successful check(): a database that is
    down when the worker starts is an outage like any other, waited out with
    the pipeline's backoff, while a refusal no waiting can fix (wrong
    password, schema.sql not applied) is raised as SinkMisconfigured.
    """

    def __init__(self, database: Database, *, client_id: str, timeout_s: float = 5.0) -> None:
        self._database = database
        self._pool: ConnectionPool[Any] = database.pool(name=f"bridge-{client_id}", configure=configure_connection)
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._ready = False
        self._in_doubt: InDoubt[WriteResult] | None = None

    def check(self) -> None:
        """Connect once, check the schema and grants, open the pool; raise SinkUnavailable or SinkMisconfigured.

        A direct connection (not the pool's) so that a failure carries the
        server's own reason, which tells an outage from a misconfiguration.
        """
        if self._ready:
            return
        where = self._database.where
        try:
            with self._database.connect() as conn:
                check_schema(conn)
        except psycopg.OperationalError as exc:
            raise connect_failure(exc, where=where) from None
        except psycopg.Error as exc:
            raise translate(exc, doing=f"checking the schema at {where}") from exc
        # Without waiting: the database has just answered, and a pool that does not
        # fill within open()'s timeout closes for good (psycopg_pool), where a
        # write that finds no connection yet is only retried.
        self._pool.open(wait=False)
        self._ready = True

    def close(self) -> None:
        """Close the pool's connection."""
        self._pool.close()

    def write(self, batch: Sequence[Delivery]) -> WriteResult:
        """Store a batch in one transaction; raise SinkUnavailable, SinkRefused or SinkMisconfigured.

        A batch whose COMMIT went unanswered is not written again before the
        server said it did not commit (bridge/indoubt.py).
        """
        self.check()
        key = batch_key(batch)
        settled = self._settle_in_doubt(key)
        if settled is not None:
            return settled
        staged = self._stage(batch)
        committing: InDoubt[WriteResult] | None = None
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                with conn.transaction():
                    txid = _fetch_int(conn, TXID)
                    result = self._write(conn, staged)
                    committing = InDoubt(key, txid, result)  # leaving the block sends COMMIT
                return result
        except PoolTimeout as exc:
            raise SinkUnavailable(f"no database connection within {self._timeout_s} s") from exc
        except psycopg.Error as exc:
            error = translate(exc)
            if committing is not None and isinstance(error, SinkUnavailable):
                self._in_doubt = committing
            raise error from exc

    def _settle_in_doubt(self, key: tuple[int, ...]) -> WriteResult | None:
        """The result of an in-doubt batch that did commit; None when `key` must be written (again)."""
        doubt = self._in_doubt
        if doubt is None:
            return None
        if doubt.key != key:
            # The pipeline moved on to other messages (the one-by-one fallback): the
            # in-doubt one comes back under its own key only if it is retried alone.
            logger.warning("transaction %d's outcome was never settled; its batch is no longer retried", doubt.txid)
            self._in_doubt = None
            return None
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                status = ask_status(conn, doubt.txid)
        except PoolTimeout as exc:
            raise SinkUnavailable(f"no database connection within {self._timeout_s} s") from exc
        except psycopg.Error as exc:
            raise translate(exc, doing="asking what became of the last commit") from exc
        if status == Outcome.IN_PROGRESS:
            raise SinkUnavailable(f"transaction {doubt.txid} is still committing")
        log_resolution(doubt, status)
        self._in_doubt = None
        return doubt.result if status == Outcome.COMMITTED else None

    def _stage(self, batch: Sequence[Delivery]) -> _Staged:
        staged = _Staged()
        for delivery in batch:
            parsed = delivery.parsed
            for row, index in zip(parsed.rows, parsed.indexes, strict=True):
                staged.rows.append((len(staged.rows), *row))
                staged.origins.append((delivery, index, row))
            for rejection in parsed.rejections:
                staged.rejected.append((
                    delivery.received_at, delivery.topic, rejection.payload, rejection.code.value, rejection.reason,
                    self._client_id,
                ))
        return staged

    def _write(self, conn: psycopg.Connection[Any], staged: _Staged) -> WriteResult:
        result = WriteResult()
        with conn.cursor() as cur:
            if staged.rows:
                _copy(cur, _COPY_STAGING, _STAGING_TYPES, staged.rows)
                cur.execute(_INSERT)
                inserted = cur.fetchone()
                result.stored = int(inserted[0]) if inserted else 0
                if result.stored < len(staged.rows):
                    cur.execute(_CONFLICTS)
                    for seq, value, unit in cur.fetchall():
                        staged.rejected.append(self._conflict(staged, seq, value, unit))
                        result.conflicts += 1
                result.duplicates = len(staged.rows) - result.stored - result.conflicts
            if staged.rejected:
                _copy(cur, _COPY_REJECTED, _REJECTED_TYPES, staged.rejected)
        result.rejected = len(staged.rejected) - result.conflicts
        return result

    def _conflict(self, staged: _Staged, seq: int, value: float, unit: str) -> _RejectedRow:
        delivery, index, row = staged.origins[seq]
        reason = (
            f"conflict: a reading for sensor {row.sensor_id}, {row.variable} at "
            f"{row.timestamp.isoformat()} is already stored with value {value!r} {unit!r}; "
            f"this one has {row.value!r} {row.unit!r}. The stored reading was kept"
        )
        return (
            delivery.received_at, delivery.topic, delivery.raw_reading(index), RejectionCode.CONFLICT.value, reason,
            self._client_id,
        )


def _fetch_int(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    if row is None:
        raise psycopg.InterfaceError(f"no row from {query}")
    return int(row[0])


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise SinkMisconfigured when schema.sql was not applied or the role may not insert."""
    try:
        row = conn.execute(_PRIVILEGES).fetchone()
    except psycopg.errors.UndefinedTable as exc:
        raise SinkMisconfigured(f"{str(exc).strip()}: apply schema.sql to the database first") from None
    if not row or not all(row):
        raise SinkMisconfigured(
            "the database role may not insert into readings and rejected_messages: grant it iot_bridge"
        )


def configure_connection(conn: psycopg.Connection[Any]) -> None:
    """Create the session's staging table (the pool calls this for each new connection)."""
    conn.execute(STAGING_DDL)
    conn.commit()


def _copy(cur: psycopg.Cursor[Any], statement: str, types: list[str], rows: Sequence[Sequence[object]]) -> None:
    with cur.copy(sql.SQL(statement)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
