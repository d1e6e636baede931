"""The time ranges of a partitioned table's partitions, read from PostgreSQL's catalog.

Shared by the bridge (which readings of a refused batch no partition holds)
and the watchdog (how far ahead partitions exist). The catalog is readable by
every role, so neither needs a privilege for it, and it is the truth whoever
made the partitions (pg_partman, an operator, a migration).
"""

from __future__ import annotations

from psycopg import sql

# One row per partition of %(table)s: its range [lower, upper). A partition
# bound reads FOR VALUES FROM ('2026-12-04 00:00:00+00') TO ('...') in the
# session's time zone, with the offset, so it casts back to the same instant.
# A DEFAULT partition has no range and is left out (is_default tells of it).
RANGES = r"""
SELECT CASE WHEN b[1] = 'MINVALUE' THEN '-infinity' ELSE btrim(b[1], '''') END::timestamptz AS lower,
       CASE WHEN b[2] = 'MAXVALUE' THEN 'infinity' ELSE btrim(b[2], '''') END::timestamptz AS upper
FROM (
    SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \((.+)\) TO \((.+)\)') AS b
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = %(table)s::regclass
) AS bounds
WHERE b IS NOT NULL
"""

# Whether %(table)s is partitioned, and whether it has a DEFAULT partition.
LAYOUT = """
SELECT c.relkind = 'p',
       EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
               WHERE i.inhparent = c.oid AND pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT')
FROM pg_class c WHERE c.oid = %(table)s::regclass
"""


def over_ranges(query: str) -> sql.Composed:
    """`query` with `{ranges}` standing for RANGES, e.g. "SELECT max(upper) FROM ({ranges}) AS r"."""
    return sql.SQL(query).format(ranges=sql.SQL(RANGES))
