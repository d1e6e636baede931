"""Store batches of deliveries in PostgreSQL, set-based, in one transaction each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.corrections import write_corrections
from bridge.database import Database, connect_failure, translate
from bridge.errors import SinkMisconfigured, SinkRefused, SinkUnavailable
from bridge.indoubt import TXID, InDoubt, Outcome, ask_status, batch_key, log_resolution
from bridge.model import Delivery
from bridge.revisions import OnConflict
from bridge.staging import STAGING_DDL, Staged, WriteResult, describe_stored
from bridge.unplaced import find_unplaced, set_aside
from iotcommon.contract import RejectionCode

__all__ = ["PostgresSink", "Sink", "WriteResult", "check_schema", "configure_connection"]

logger = logging.getLogger(__name__)

# DISTINCT ON keeps the first of several copies within one batch, so the
# later copies are judged against it like any other duplicate.
_INSERT = """
WITH inserted AS (
    INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, revision)
    SELECT DISTINCT ON (sensor_id, "timestamp", variable) sensor_id, "timestamp", variable, value, unit, revision
    FROM bridge_staging ORDER BY sensor_id, "timestamp", variable, seq
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""
_CONFLICTS = """
SELECT s.seq, r.value, r.unit, r.revision
FROM bridge_staging s JOIN readings r USING (sensor_id, "timestamp", variable)
WHERE s.value IS DISTINCT FROM r.value OR s.unit IS DISTINCT FROM r.unit OR s.revision <> r.revision
ORDER BY s.seq
"""
# What each mode needs (schema.sql's iot_bridge and iot_bridge_update), as
# (the grant that gives it, the check). A column or table schema.sql adds
# raises UndefinedColumn/UndefinedTable here on a database it was not applied to.
_NEEDS = {
    OnConflict.KEEP: (
        ("iot_bridge", "has_table_privilege('readings', 'INSERT')"),
        ("iot_bridge", "has_table_privilege('rejected_messages', 'INSERT')"),
        ("iot_bridge", "has_column_privilege('readings', 'revision', 'SELECT')"),
    ),
    OnConflict.UPDATE: (
        ("iot_bridge_update", "has_column_privilege('readings', 'ingested_at', 'SELECT')"),
        *(("iot_bridge_update", f"has_column_privilege('readings', '{column}', 'UPDATE')")
          for column in ("value", "unit", "revision", "ingested_at")),
        ("iot_bridge_update", "has_table_privilege('reading_revisions', 'INSERT')"),
        ("iot_bridge_update", "has_column_privilege('reading_revisions', 'revision', 'SELECT')"),
    ),
}


class Sink(Protocol):
    """Where the pipeline stores batches."""

    def check(self) -> None: ...

    def write(self, batch: Sequence[Delivery]) -> WriteResult: ...


class PostgresSink:
    """Writes each batch with COPY into a staging table and one INSERT ... ON CONFLICT DO NOTHING.

    The pool is opened by the first successful check(): a database that is
    down when the worker starts is an outage like any other, waited out with
    the pipeline's backoff, while a refusal no waiting can fix (wrong
    password, schema.sql not applied) is raised as SinkMisconfigured.
    """

    def __init__(
        self, database: Database, *, client_id: str, on_conflict: OnConflict = OnConflict.KEEP, timeout_s: float = 5.0
    ) -> None:
        self._database = database
        self._on_conflict = on_conflict
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
                check_schema(conn, on_conflict=self._on_conflict)
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
        try:
            return self._commit(key, batch)
        except SinkRefused as exc:
            if exc.code is not RejectionCode.NO_PARTITION:
                raise
            # Partitioned readings: dead-letter just the readings no partition holds (bridge/unplaced.py).
            return self._commit(key, self._set_aside_unplaced(batch))

    def _commit(self, key: tuple[int, ...], batch: Sequence[Delivery]) -> WriteResult:
        """Write the batch in one transaction; a COMMIT that went unanswered leaves it in doubt."""
        staged = Staged.of(batch, client_id=self._client_id)
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

    def _set_aside_unplaced(self, batch: Sequence[Delivery]) -> list[Delivery]:
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn, conn.transaction():
                unplaced = find_unplaced(conn, batch)
        except PoolTimeout as exc:
            raise SinkUnavailable(f"no database connection within {self._timeout_s} s") from exc
        except psycopg.Error as exc:
            raise translate(exc, doing="finding the readings no partition holds") from exc
        logger.warning("%d timestamps of a batch have no partition of readings; storing those readings as "
                       "no_partition dead letters", len(unplaced))
        return set_aside(batch, unplaced)

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

    def _write(self, conn: psycopg.Connection[Any], staged: Staged) -> WriteResult:
        with conn.cursor() as cur:
            result = WriteResult()
            if staged.rows:  # into the staging table; then each mode stores them its own way
                staged.copy_rows(cur)
                write = write_corrections if self._on_conflict is OnConflict.UPDATE else _write_keeping
                result = write(cur, staged)
            staged.copy_rejected(cur)
        result.rejected = len(staged.rejected) - result.conflicts - result.stale
        return result


def _write_keeping(cur: psycopg.Cursor[Any], staged: Staged) -> WriteResult:
    """BRIDGE_ON_CONFLICT=keep: new keys are stored, any other copy of a stored key is a duplicate or a conflict.

    The batch's readings are in the staging table already.
    """
    result = WriteResult()
    cur.execute(_INSERT)
    inserted = cur.fetchone()
    result.stored = int(inserted[0]) if inserted else 0
    if result.stored < len(staged.rows):
        cur.execute(_CONFLICTS)
        for seq, value, unit, revision in cur.fetchall():
            row = staged.origins[seq][2]
            words = describe_stored(row, value=value, unit=unit, revision=revision)
            staged.dead_letter(seq, RejectionCode.CONFLICT, f"conflict: {words}. The stored reading was kept")
            result.conflicts += 1
    result.duplicates = len(staged.rows) - result.stored - result.conflicts
    return result


def _fetch_int(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    if row is None:
        raise psycopg.InterfaceError(f"no row from {query}")
    return int(row[0])


def check_schema(conn: psycopg.Connection[Any], *, on_conflict: OnConflict = OnConflict.KEEP) -> None:
    """Raise SinkMisconfigured when schema.sql was not applied or the role lacks what `on_conflict` needs."""
    needs = _NEEDS[OnConflict.KEEP] + (_NEEDS[OnConflict.UPDATE] if on_conflict is OnConflict.UPDATE else ())
    try:
        row = conn.execute("SELECT " + ", ".join(check for _, check in needs)).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise SinkMisconfigured(f"{str(exc).strip()}: apply schema.sql to the database first") from None
    missing = [need for need, granted in zip(needs, row or (), strict=True) if not granted]
    if missing:
        grant, check = missing[0]
        raise SinkMisconfigured(
            f"the database role lacks {_privilege_of(check)}, which BRIDGE_ON_CONFLICT={on_conflict.value} "
            f"needs: grant it {grant}"
        )


def _privilege_of(check: str) -> str:
    """'INSERT on readings' from has_table_privilege('readings', 'INSERT'), or 'UPDATE on readings.value'."""
    names = [part.strip(" '") for part in check[check.index("(") + 1 : -1].split(",")]
    return f"{names[-1]} on {'.'.join(names[:-1])}"


def configure_connection(conn: psycopg.Connection[Any]) -> None:
    """Create the session's staging table (the pool calls this for each new connection)."""
    conn.execute(STAGING_DDL)
    conn.commit()
