"""The database probes: connect and run SELECT 1, and read the partitions of readings, within a timeout."""

from __future__ import annotations

import math
from typing import Any

import psycopg

from iotcommon.partitions import LAYOUT, over_ranges
from watchdog.checks import PartitionFacts


def probe_database(conninfo: str, *, timeout_s: float, application_name: str) -> str | None:
    """None when a fresh connection runs SELECT 1 in time, else the reason (never the password)."""
    try:
        with psycopg.connect(
            conninfo,
            autocommit=True,
            # libpq counts whole seconds and treats 1 as 2; the statement timeout covers the query.
            connect_timeout=max(math.ceil(timeout_s), 2),
            application_name=application_name,
            options=f"-c statement_timeout={int(timeout_s * 1000)}",
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        # libpq's messages name host and port but never the password.
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return f"cannot run SELECT 1: {'; '.join(lines[:2]) or type(exc).__name__}"
    return None


def probe_partitions(conninfo: str, *, timeout_s: float, application_name: str) -> PartitionFacts | str:
    """What the catalog says about readings' partitions (and pg_partman's premake, where granted), or the error."""
    try:
        with psycopg.connect(
            conninfo, autocommit=True, connect_timeout=max(math.ceil(timeout_s), 2),
            application_name=application_name, options=f"-c statement_timeout={int(timeout_s * 1000)}",
        ) as conn:
            return _partition_facts(conn)
    except psycopg.Error as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return f"cannot read the partitions of readings: {'; '.join(lines[:2]) or type(exc).__name__}"


def _partition_facts(conn: psycopg.Connection[Any]) -> PartitionFacts:
    row = conn.execute(LAYOUT, {"table": "readings"}).fetchone()
    if not row or not row[0]:
        return PartitionFacts(partitioned=False)
    ahead, newest = conn.execute(
        over_ranges("SELECT count(*) FILTER (WHERE lower > now()), max(upper) FROM ({ranges}) AS r"),
        {"table": "readings"},
    ).fetchone() or (0, None)
    premake = None
    # pg_partman's config, granted to iot_watchdog by `python -m bridge partition setup`.
    if conn.execute("SELECT to_regclass('partman.part_config') IS NOT NULL "
                    "AND has_table_privilege('partman.part_config', 'SELECT')").fetchone() == (True,):
        found = conn.execute("SELECT premake FROM partman.part_config WHERE parent_table = 'public.readings'"
                             ).fetchone()
        premake = int(found[0]) if found else None
    return PartitionFacts(partitioned=True, ahead=int(ahead), newest_upper=newest, premake=premake)
