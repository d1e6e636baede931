"""Partitioned readings with pg_partman: install it, convert readings (empty or filled), configure, describe.

The conversion runs in one transaction holding readings' ACCESS EXCLUSIVE
lock, so no reading is written or read half-way: workers wait for the lock
(a batch that waits past BRIDGE_STATEMENT_TIMEOUT_MS is cancelled and retried),
holding what they receive unacknowledged, so nothing is lost; the broker
queues the rest. How long it holds is reported (docs/scaling.md has figures).

Layout: native range partitions on "timestamp", no DEFAULT partition. A row
no partition holds is refused, so a stray row can never sit in a default
partition and make maintenance fail; with infinite_time_partitions, pg_partman
premakes from the clock, not from the newest row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bridge.partition.settings import PartitionSettings
from iotcommon.contract import RejectionCode
from iotcommon.partitions import LAYOUT, RANGES, over_ranges

PARENT = "public.readings"  # as pg_partman's part_config names it
OLD = "readings_unpartitioned"  # the table a conversion leaves behind, for the owner to check and drop
CLIENT_ID = "partition-setup"  # rejected_messages.client_id of the rows a conversion set aside


class PartitionError(Exception):
    """The partitioning cannot go on as asked; the message names the fix."""


@dataclass(frozen=True, slots=True)
class Conversion:
    """What converting readings did."""

    rows: int  # copied into partitions
    set_aside: int  # rows outside [BRIDGE_MIN_TIMESTAMP, last partition): moved to rejected_messages
    partitions: int
    held_s: float  # how long readings was locked (ingestion held)


@dataclass(frozen=True, slots=True)
class Layout:
    """What the catalog says about readings' partitions."""

    partitioned: bool
    has_default: bool
    ranges: tuple[tuple[datetime, datetime], ...]  # (lower, upper), oldest first

    def ahead(self, now: datetime) -> int:
        """Partitions that start after `now`: the premade ones."""
        return sum(1 for lower, _ in self.ranges if lower > now)


def read_layout(conn: psycopg.Connection[Any], table: str = "readings") -> Layout:
    """Whether `table` is partitioned, with a DEFAULT partition, and its partitions' ranges."""
    row = conn.execute(LAYOUT, {"table": table}).fetchone()
    partitioned, has_default = (bool(row[0]), bool(row[1])) if row else (False, False)
    ranges = conn.execute(over_ranges("SELECT lower, upper FROM ({ranges}) AS r ORDER BY lower"),
                          {"table": table}).fetchall()
    return Layout(partitioned, has_default, tuple((lower, upper) for lower, upper in ranges))


def install(conn: psycopg.Connection[Any]) -> int:
    """CREATE EXTENSION pg_partman (in schema partman) if missing; its major version."""
    try:
        conn.execute("CREATE SCHEMA IF NOT EXISTS partman")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
    except psycopg.errors.FeatureNotSupported as exc:  # e.g. "extension is not available"
        raise PartitionError(f"{str(exc).strip()}: install pg_partman on the database server "
                             "(Debian: postgresql-<major>-partman)") from None
    except psycopg.errors.UndefinedFile as exc:
        raise PartitionError(f"{str(exc).strip()}: install pg_partman on the database server "
                             "(Debian: postgresql-<major>-partman)") from None
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'").fetchone()
    return int(str(row[0]).split(".")[0]) if row else 0


def convert(conn: psycopg.Connection[Any], settings: PartitionSettings, *, major: int) -> Conversion:
    """Replace the plain readings by a partitioned one holding the same rows; the old table stays as OLD."""
    started = time.monotonic()
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{settings.lock_timeout_s}s")))
        conn.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        if conn.execute("SELECT to_regclass(%s)", (OLD,)).fetchone() != (None,):
            raise PartitionError(f"table {OLD} exists (left by an earlier conversion): drop it first")
        total = _scalar(conn, "SELECT count(*) FROM readings")
        _swap_in_partitioned_table(conn)
        _create_parent(conn, settings, major=major)
        _partitions_for_old_rows(conn, settings)
        horizon = _scalar(conn, over_ranges("SELECT max(upper) FROM ({ranges}) AS r"), {"table": "readings"})
        set_aside = _set_aside(conn, floor=settings.min_timestamp, horizon=horizon)
        rows = _copy_rows(conn, floor=settings.min_timestamp, horizon=horizon)
        _index_like_old(conn)
        if rows + set_aside != total:
            raise PartitionError(f"copied {rows} and set aside {set_aside} of {total} rows: nothing was changed")
        partitions = len(read_layout(conn).ranges)
        if total == 0:  # a new database: nothing to check in the old table
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(OLD)))
    return Conversion(rows, set_aside, partitions, time.monotonic() - started)


def _swap_in_partitioned_table(conn: psycopg.Connection[Any]) -> None:
    """Rename readings to OLD and create a partitioned readings like it: columns, checks, indexes, grants."""
    conn.execute(sql.SQL("ALTER TABLE readings RENAME TO {}").format(sql.Identifier(OLD)))
    for (index,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                                 (OLD,)).fetchall():
        renamed = OLD + index.removeprefix("readings")
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(index), sql.Identifier(renamed)))
    # The indexes come after the rows (_index_like_old): building one from sorted rows is
    # faster than a million inserts into it, and the lock is held for all of it.
    conn.execute(sql.SQL(
        'CREATE TABLE readings (LIKE {} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE ("timestamp")'
    ).format(sql.Identifier(OLD)))
    comment = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (OLD,)).fetchone()
    if comment and comment[0]:
        conn.execute(sql.SQL("COMMENT ON TABLE readings IS {}").format(sql.Literal(comment[0])))
    _copy_grants(conn)


def _index_like_old(conn: psycopg.Connection[Any]) -> None:
    """OLD's indexes (schema.sql's primary key and BRIN) on the partitioned readings, under their own names."""
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    definitions = conn.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisprimary "
                               "FROM pg_index WHERE indrelid = %s::regclass ORDER BY indisprimary DESC", (OLD,))
    for index, definition, primary in definitions.fetchall():
        name = "readings" + index.removeprefix(OLD)
        if primary:  # a constraint, not only an index: ON CONFLICT and the replicas need it as such
            columns = definition[definition.index(" USING btree ") + len(" USING btree "):]
            conn.execute(sql.SQL("ALTER TABLE readings ADD CONSTRAINT {} PRIMARY KEY {}").format(
                sql.Identifier(name), sql.SQL(columns)))
        else:
            rest = definition[definition.index(" USING "):]
            conn.execute(sql.SQL("CREATE INDEX {} ON readings{}").format(sql.Identifier(name), sql.SQL(rest)))


def _copy_grants(conn: psycopg.Connection[Any]) -> None:
    """Grant on the new readings what was granted on OLD, table-wide and per column (schema.sql's roles)."""
    grants = conn.execute("""
        SELECT a.privilege_type, NULL::name, a.grantee FROM pg_class c, aclexplode(c.relacl) AS a
        WHERE c.oid = %(old)s::regclass AND a.grantee <> c.relowner
        UNION ALL
        SELECT a.privilege_type, t.attname, a.grantee FROM pg_attribute t, aclexplode(t.attacl) AS a
        WHERE t.attrelid = %(old)s::regclass AND t.attacl IS NOT NULL
    """, {"old": OLD}).fetchall()
    for privilege, column, grantee in grants:
        who = sql.SQL("PUBLIC") if grantee == 0 else sql.SQL("{}").format(
            sql.Identifier(_scalar(conn, "SELECT rolname FROM pg_roles WHERE oid = %s", (grantee,))))
        columns = sql.SQL("") if column is None else sql.SQL(" ({})").format(sql.Identifier(column))
        conn.execute(sql.SQL("GRANT {}{} ON readings TO {}").format(sql.SQL(privilege), columns, who))


def _create_parent(conn: psycopg.Connection[Any], settings: PartitionSettings, *, major: int) -> None:
    """pg_partman takes readings over: partitions from `premake` intervals back to `premake` ahead, no DEFAULT."""
    start = _scalar(conn, "SELECT now() - %s::interval * %s", (settings.interval, settings.premake))
    common = {"parent": PARENT, "interval": settings.interval, "premake": settings.premake, "start": str(start)}
    if major >= 5:  # 5.x: range is the default type, and the DEFAULT partition can be left out
        conn.execute("SELECT partman.create_parent(p_parent_table := %(parent)s, p_control := 'timestamp', "
                     "p_interval := %(interval)s, p_premake := %(premake)s, p_start_partition := %(start)s, "
                     "p_default_table := false)", common)
    else:  # 4.x always makes a DEFAULT partition: dropped below, while it is still empty
        conn.execute("SELECT partman.create_parent(p_parent_table := %(parent)s, p_control := 'timestamp', "
                     "p_type := 'native', p_interval := %(interval)s, p_premake := %(premake)s, "
                     "p_start_partition := %(start)s)", common)
    for (default,) in conn.execute("""
            SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'readings'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
            """).fetchall():
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(default)))
    configure(conn, settings)


def _partitions_for_old_rows(conn: psycopg.Connection[Any], settings: PartitionSettings) -> None:
    """A partition for each interval older than the premade ones that holds rows: only those, not every one between."""
    conn.execute(sql.SQL("""
        SELECT partman.create_partition_time(%(parent)s, array_agg(DISTINCT start ORDER BY start))
        FROM (SELECT (partman.show_partition_name(%(parent)s, hour::text)).suffix_timestamp AS start
              FROM (SELECT DISTINCT date_trunc('hour', "timestamp") AS hour FROM {old}
                    WHERE "timestamp" >= %(floor)s
                      AND "timestamp" < (SELECT min(lower) FROM ({ranges}) AS r)) AS hours) AS starts
        HAVING count(*) > 0
    """).format(old=sql.Identifier(OLD), ranges=sql.SQL(RANGES)),
        {"parent": PARENT, "floor": settings.min_timestamp, "table": "readings"})


_SET_ASIDE = sql.SQL("""
INSERT INTO rejected_messages (received_at, topic, payload, reason_code, reason, client_id)
SELECT ingested_at, 'sensors/' || sensor_id || '/readings',
       convert_to(json_build_object('sensor_id', sensor_id, 'timestamp', "timestamp", 'variable', variable,
                                    'value', value, 'unit', unit, 'revision', revision)::text, 'UTF8'),
       CASE WHEN "timestamp" < %(floor)s THEN %(past)s ELSE %(future)s END,
       'timestamp: ' || (to_json("timestamp") #>> '{{}}') || CASE WHEN "timestamp" < %(floor)s
            THEN ' is before BRIDGE_MIN_TIMESTAMP=' || (to_json(%(floor)s::timestamptz) #>> '{{}}')
            ELSE ' is after the last partition made when readings was partitioned ('
                 || (to_json(%(horizon)s::timestamptz) #>> '{{}}') || ')' END
       || '; set aside by python -m bridge partition setup',
       %(client_id)s
FROM {old} WHERE "timestamp" < %(floor)s OR "timestamp" >= %(horizon)s
""").format(old=sql.Identifier(OLD))


def _set_aside(conn: psycopg.Connection[Any], *, floor: datetime, horizon: datetime) -> int:
    """Rows a wrong clock dated before the floor or past the premade partitions become dead letters.

    Kept in readings they would make a partition in 1970 or 2030, and pg_partman
    premakes after the newest partition: none would be made for the coming days.
    """
    cursor = conn.execute(_SET_ASIDE, {
        "floor": floor, "horizon": horizon, "client_id": CLIENT_ID,
        "past": RejectionCode.PAST_TIMESTAMP.value, "future": RejectionCode.FUTURE_TIMESTAMP.value,
    })
    return max(cursor.rowcount, 0)


def _copy_rows(conn: psycopg.Connection[Any], *, floor: datetime, horizon: datetime) -> int:
    cursor = conn.execute(
        sql.SQL('INSERT INTO readings SELECT * FROM {} WHERE "timestamp" >= %s AND "timestamp" < %s').format(
            sql.Identifier(OLD)), (floor, horizon))
    return max(cursor.rowcount, 0)


def configure(conn: psycopg.Connection[Any], settings: PartitionSettings) -> None:
    """Apply premake and retention to pg_partman's config of readings; refuse another interval."""
    row = conn.execute("SELECT partition_interval::interval = %s::interval, partition_interval "
                       "FROM partman.part_config WHERE parent_table = %s", (settings.interval, PARENT)).fetchone()
    if row is None:
        raise PartitionError("readings is partitioned, but not by pg_partman (no row in partman.part_config)")
    if not row[0]:
        raise PartitionError(f"PARTITION_INTERVAL is {settings.interval!r}, but readings has {row[1]!r} partitions; "
                             "set it back (changing the interval of existing partitions is not supported)")
    # infinite_time_partitions: premake from the clock even when no row came in (pg_partman's
    # default premakes after the newest row). retention_keep_table false: drop, not just detach.
    conn.execute("""
        UPDATE partman.part_config
        SET premake = %s, retention = %s, retention_keep_table = false, infinite_time_partitions = true,
            automatic_maintenance = 'on'
        WHERE parent_table = %s
    """, (settings.premake, settings.kept(settings.retention), PARENT))
    # The watchdog compares the partitions ahead with premake (watchdog/database.py).
    conn.execute("GRANT USAGE ON SCHEMA partman TO iot_watchdog")
    conn.execute("GRANT SELECT ON partman.part_config TO iot_watchdog")


def _scalar(conn: psycopg.Connection[Any], query: str | sql.Composed, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise PartitionError("a query that always returns a row returned none")
    return row[0]
