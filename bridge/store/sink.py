"""Store batches of deliveries in PostgreSQL, set-based, in one transaction each."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.errors import SinkMisconfigured, SinkRefused, SinkUnavailable
from bridge.model import Delivery
from bridge.store.corrections import write_corrections
from bridge.store.database import CommitWarnings, Database, connect_failure, translate
from bridge.store.indoubt import CREATE_MARKER, Attempt, Doubts, swap_marker
from bridge.store.revisions import OnConflict
from bridge.store.staging import STAGING_DDL, Staged, WriteResult, describe_stored
from bridge.store.unplaced import find_unplaced, set_aside
from iotcommon.contract import RejectionCode

__all__ = ["CommitWatcher", "PostgresSink", "Sink", "WriteResult", "check_schema"]

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
        ("iot_bridge", "has_table_privilege('bridge_progress', 'INSERT')"),
        ("iot_bridge", "has_column_privilege('bridge_progress', 'batch_id', 'UPDATE')"),
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


class CommitWatcher(Protocol):
    """Told when a COMMIT starts waiting and when it returns (bridge.stats.Stats), for the heartbeat thread."""

    def commit_started(self, at: datetime) -> None: ...

    def commit_ended(self) -> None: ...


class PostgresSink:
    """Writes each batch with COPY into a staging table and one INSERT ... ON CONFLICT DO NOTHING.

    The pool is opened by the first successful check(): a database that is
    down when the worker starts is an outage like any other, waited out with
    the pipeline's backoff, while a refusal no waiting can fix (wrong
    password, schema.sql not applied) is raised as SinkMisconfigured.
    """

    def __init__(
        self, database: Database, *, client_id: str, on_conflict: OnConflict = OnConflict.KEEP, timeout_s: float = 5.0,
        watcher: CommitWatcher | None = None, now: Callable[[], datetime] | None = None,
    ) -> None:
        self._database = database
        self._on_conflict = on_conflict
        self._pool: ConnectionPool[Any] = database.pool(name=f"bridge-{client_id}", configure=self._configure)
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._ready = False
        self._doubts: Doubts[WriteResult] = Doubts()
        self._warnings = CommitWarnings()
        self._watcher = watcher
        self._now = now

    def check(self) -> None:
        """Connect once, check the schema and grants, create the marker row, open the pool.

        Raises SinkUnavailable or SinkMisconfigured. A direct connection (not the
        pool's) so that a failure carries the server's own reason, which tells an
        outage from a misconfiguration.
        """
        if self._ready:
            return
        where = self._database.where
        try:
            with self._database.connect() as conn:
                check_schema(conn, on_conflict=self._on_conflict)
                # Not worth waiting for an absent synchronous standby at start: a server
                # without the row gets it from the first batch (bridge/store/indoubt.py).
                conn.execute("SET LOCAL synchronous_commit = local")
                conn.execute(CREATE_MARKER, (self._client_id,))
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

        A batch whose COMMIT went unanswered, or returned without the standby's
        confirmation, is settled by the marker row before it is written again
        (bridge/store/indoubt.py). The worker never cancels a COMMIT.
        """
        self.check()
        try:
            return self._transaction(self._doubts.begin(batch), batch)
        except SinkRefused as exc:
            if exc.code is not RejectionCode.NO_PARTITION:
                raise
            # Partitioned readings: dead-letter just the readings no partition holds (bridge/store/unplaced.py),
            # in a fresh attempt under the same deliveries (the pipeline retries these): the first rolled back.
            return self._transaction(self._doubts.begin(batch), self._set_aside_unplaced(batch))

    def _transaction(self, attempt: Attempt[WriteResult], batch: Sequence[Delivery]) -> WriteResult:
        """Write (or only confirm) the batch in one transaction; an unconfirmed COMMIT leaves it in doubt."""
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                result = self._store(conn, attempt, batch)  # in a transaction psycopg begins
                self._doubts.committing(attempt, result)
                self._commit(conn)
        except PoolTimeout as exc:
            raise SinkUnavailable(f"no database connection within {self._timeout_s} s") from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc
        warning = self._warnings.take()
        if warning is not None:
            # Committed on the primary only: not durable until a later COMMIT
            # (the one that settles it) is confirmed by the standby.
            raise SinkUnavailable(f"COMMIT returned without the standby's confirmation ({warning}); "
                                  "the batch stays unacknowledged until it is confirmed")
        self._doubts.committed(attempt)
        return result

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

    def _store(
        self, conn: psycopg.Connection[Any], attempt: Attempt[WriteResult], batch: Sequence[Delivery]
    ) -> WriteResult:
        """Swap the marker; write the batch unless the marker shows it is here already (then only confirm it)."""
        try:
            previous = swap_marker(conn, client_id=self._client_id, batch_id=attempt.batch_id)
        except psycopg.errors.QueryCanceled as exc:
            raise SinkUnavailable(
                f"an earlier transaction of {self._client_id} still holds its bridge_progress row (a COMMIT "
                "waiting for a synchronous standby?); trying again"
            ) from exc
        stored = self._doubts.marker_read(attempt, previous)
        if stored is not None:
            return stored
        return self._write(conn, Staged.of(batch, client_id=self._client_id))

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        """COMMIT, telling the watcher while it waits (a synchronous standby may hold it for as long as it is away)."""
        self._warnings.clear()
        if self._watcher is not None and self._now is not None:
            self._watcher.commit_started(self._now())
        try:
            conn.commit()
        finally:
            if self._watcher is not None:
                self._watcher.commit_ended()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each new connection of the pool: the session's staging table, and the COMMIT warnings watched."""
        # A temporary table is this session's alone: its creation need not wait
        # for a synchronous standby (which may be away while the worker reconnects).
        conn.execute("SET LOCAL synchronous_commit = local")
        conn.execute(STAGING_DDL)
        conn.commit()
        self._warnings.watch(conn)

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


