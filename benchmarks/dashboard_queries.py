"""How long each query of the readings dashboard takes on a large table, as the read-only role.

    python benchmarks/dashboard_queries.py                    # 1,000,000 readings, about a minute
    python benchmarks/dashboard_queries.py --rows 200000      # smaller

Starts a throwaway PostgreSQL (devstack/postgres.py), applies schema.sql, fills
readings with INSERT ... SELECT generate_series (50 sensors x 8 variables, a
day of readings in time order, ingested 50 ms - 2 s after their timestamp),
plus corrections and dead letters; then expands every panel and template
variable of deploy/grafana/dashboards/iot-readings.json as Grafana would
(devstack/grafana_sql.py), and prints each one's median time over --repeat
runs and the index its plan uses.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

from devstack.grafana_sql import QueryContext, expand, load_dashboard, panel_targets
from devstack.postgres import READER_TEST_ROLE, PostgresServer, apply_schema
from devstack.urls import login_url

END_AT = datetime(2026, 3, 2, tzinfo=UTC)
SENSORS, VARIABLES = 50, ("temperature", "humidity", "pressure", "co2", "pm2_5", "illuminance", "noise", "voc")
_FILL = """
INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, ingested_at)
SELECT s, at, v, random() * 100, 'u', at + (0.05 + random() * 1.95) * interval '1 second'
FROM generate_series(1, %(steps)s) AS step,
     LATERAL (SELECT %(end)s - (%(steps)s - step) * %(every)s * interval '1 second' AS at) AS t,
     generate_series(1, %(sensors)s) AS s, unnest(%(variables)s::text[]) AS v
ORDER BY step
"""
_CORRECTIONS = """
INSERT INTO reading_revisions (sensor_id, "timestamp", variable, value, unit, revision, ingested_at, replaced_at,
                               replaced_by)
SELECT sensor_id, "timestamp", variable, value, unit, 0, ingested_at, ingested_at + interval '1 hour', 'bridge-1'
FROM readings TABLESAMPLE SYSTEM (1)
"""
_DEAD_LETTERS = """
INSERT INTO rejected_messages (received_at, topic, payload, reason, reason_code, client_id)
SELECT %(end)s - n * interval '1 second', 'sensors/1/readings', 'x', 'r',
       (ARRAY['not_json', 'wrong_type', 'conflict', 'stale_revision'])[1 + n %% 4], 'bridge-1'
FROM generate_series(1, %(count)s) AS n
"""
_INDEX = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: Backward)?(?: using| on) (\w+)")


def fill(admin_url: str, rows: int) -> None:
    """`rows` readings (rounded to whole steps), 1% of them corrected, a dead letter every second or so."""
    steps = max(1, rows // (SENSORS * len(VARIABLES)))
    every_s = 86_400 / steps
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(_FILL, {"steps": steps, "end": END_AT, "every": every_s, "sensors": SENSORS,
                             "variables": list(VARIABLES)})
        conn.execute(_CORRECTIONS)
        conn.execute(_DEAD_LETTERS, {"end": END_AT, "count": 50_000})
        conn.execute("VACUUM ANALYZE readings, reading_revisions, rejected_messages")


def queries() -> list[tuple[str, str]]:
    """(name, rawSql) of every panel target and template variable of the readings dashboard."""
    dashboard = load_dashboard()
    found = [(f"variable ${v['name']}", v["query"]) for v in dashboard["templating"]["list"]]
    found += [(f"{title} {ref}", raw_sql) for title, ref, raw_sql in panel_targets(dashboard)]
    return found


def measure(url: str, sql: str, repeat: int) -> tuple[float, int, str]:
    """(median ms, rows, the scans of its plan)."""
    with psycopg.connect(url) as conn:
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}").fetchall())
        times, count = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            count = len(conn.execute(sql).fetchall())
            times.append((time.perf_counter() - started) * 1000)
    scans = sorted({f"{kind} {name}" for kind, name in _INDEX.findall(plan)})
    return statistics.median(times), count, ", ".join(scans)


def main() -> int:
    """Fill, then time every query for each time range."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = PostgresServer()
    try:
        server.start()
        admin = server.url()
        apply_schema(admin)
        started = time.monotonic()
        fill(admin, args.rows)
        with psycopg.connect(admin) as conn:
            count = conn.execute("SELECT count(*) FROM readings").fetchone()
        print(f"filled {count[0] if count else 0:,} readings in {time.monotonic() - started:.0f} s")
        reader = login_url(admin, READER_TEST_ROLE)
        sensors = [str(n) for n in range(1, 6)]
        for label, span, interval in (("last 6 h", timedelta(hours=6), timedelta(minutes=1)),
                                      ("last 24 h", timedelta(hours=24), timedelta(minutes=5))):
            chosen = {"sensor": sensors, "variable": list(VARIABLES[:2])}
            context = QueryContext(END_AT - span, END_AT, interval, chosen)
            print(f"\n{label} ({len(sensors)} sensors x 2 variables chosen, interval {interval})")
            print(f"| {'query':<48} | {'ms':>8} | {'rows':>6} | plan |")
            print(f"| {'-' * 48} | ---: | ---: | --- |")
            for name, raw in queries():
                ms, rows, scans = measure(reader, expand(raw, context), args.repeat)
                print(f"| {name:<48} | {ms:>8.1f} | {rows:>6} | {scans} |")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
