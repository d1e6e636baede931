"""Partitioned readings (pg_partman, daily) against the plain table, side by side in one run.

    python benchmarks/partitioning.py                                # 20,000 messages x 3 rounds, a few minutes
    python benchmarks/partitioning.py --prefill-rows 20000000        # also into tables of 20,000,000 rows
    python benchmarks/partitioning.py --messages 2000 --rounds 1 --day-rows 100000   # smoke size

One throwaway PostgreSQL with two databases, `plain` and `partitioned`
(schema.sql; `python -m bridge partition setup` on the second), one Mosquitto.
Measures, alternating plain and partitioned within each round (ABBA) so a busy
machine weighs on both alike:

1. drain rate: the same backlog of single-reading messages drained by the
   bridge workers into each (empty, then with --prefill-rows older rows);
2. the readings dashboard's queries over the last hour: time, and how many
   partitions the plan touches (EXPLAIN: pruning);
3. retention: dropping a day of --day-rows readings through pg_partman's
   drop_partition_time, against a DELETE of the same rows from the plain table.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness  # benchmarks/ is on sys.path: this script's own folder
import psycopg
from bench import ONLINE_TIMEOUT_S, backlog

from bridge.partition import PartitionSettings, run_setup
from bridge.partition import connect as connect_owner
from devstack.grafana_sql import QueryContext, expand, load_dashboard, panel_targets
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import BRIDGE_TEST_ROLE, READER_TEST_ROLE, PostgresServer, apply_schema
from devstack.traffic import VARIABLES
from devstack.urls import login_url
from devstack.workers import start_online

LAYOUTS = ("plain", "partitioned")
BACKLOG_DAY = datetime(2026, 1, 1, tzinfo=UTC)  # bench.backlog()'s timestamps
RETENTION_DAY = datetime(2025, 6, 1, tzinfo=UTC)


class Databases:
    """The two databases' owner URLs, and running SQL in them."""

    def __init__(self, pg: PostgresServer) -> None:
        self.url = {layout: pg.url(dbname=layout) for layout in LAYOUTS}
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            for layout in LAYOUTS:
                conn.execute(f"CREATE DATABASE {layout}")
        for layout in LAYOUTS:
            apply_schema(self.url[layout])

    def run(self, layout: str, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url[layout], autocommit=True) as conn:
            cursor = conn.execute(sql, params)  # the benchmark's own statements
            return cursor.fetchall() if cursor.description else []

    def partition(self) -> None:
        """`partition setup` on the partitioned database, plus partitions for the backlogs' day."""
        settings = PartitionSettings.from_env({"DATABASE_URL": self.url["partitioned"], "PARTITION_RETENTION": "none"})
        with connect_owner(settings) as conn:
            run_setup(conn, settings)
        self.run("partitioned", "SELECT partman.create_partition_time('public.readings', ARRAY[%s, %s]::timestamptz[])",
                 (BACKLOG_DAY, RETENTION_DAY))


def drain(dbs: Databases, layout: str, mqtt_url: str, tmp: Path, *, messages: int, workers: int, tag: str) -> float:
    """Readings/s of `workers` bridge workers draining `messages` fresh single-reading messages into `layout`."""
    bridge_url = login_url(dbs.url[layout], BRIDGE_TEST_ROLE)
    group = f"{tag}-{int(time.time() * 1000)}"
    members: list[harness.GroupMember] = [
        harness.bridge_worker(f"{group}-{n}", group, mqtt_url=mqtt_url, database_url=bridge_url, tmp=tmp)
        for n in range(workers)]
    try:
        start_online(members, mqtt_url, timeout_s=ONLINE_TIMEOUT_S)
        harness.stop_all(members)
        with MqttTestClient.from_url(mqtt_url) as publisher:
            publisher.publish_many(backlog(messages, 1, tag), timeout=900)
        target = harness.stored(dbs.url[layout]) + messages
        seconds = harness.timed(members, lambda: harness.stored(dbs.url[layout]) >= target, timeout_s=900)
    finally:
        harness.stop_all(members)
        harness.end_sessions(members, mqtt_url)
    return messages / seconds


def drains(dbs: Databases, args: argparse.Namespace, mqtt_url: str, tmp: Path, *, label: str, tag: str) -> list[str]:
    """Each round drains into plain and partitioned, in ABBA order; the rates' ranges and the ratio's."""
    rates: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    ratios = []
    for round_ in range(args.rounds):
        order = LAYOUTS if round_ % 2 == 0 else tuple(reversed(LAYOUTS))
        got = {layout: drain(dbs, layout, mqtt_url, tmp, messages=args.messages, workers=args.workers,
                             tag=f"{tag}{round_}{layout[:4]}") for layout in order}
        for layout, rate in got.items():
            rates[layout].append(rate)
        ratios.append(got["partitioned"] / got["plain"])
        print(f"  {label} round {round_ + 1}: plain {got['plain']:,.0f}, partitioned {got['partitioned']:,.0f} "
              f"readings/s", flush=True)
    return [f"drain {label}, {args.messages:,} messages x {args.rounds} rounds, {args.workers} workers: plain "
            f"{_span(rates['plain'])}, partitioned {_span(rates['partitioned'])} readings/s; partitioned/plain "
            f"{_span(ratios, '.2f')}"]


def dashboards(dbs: Databases, repeat: int) -> list[str]:
    """Each panel over the last hour of the backlogs' data: median ms per layout and the partitions it touches."""
    end = BACKLOG_DAY + timedelta(hours=1)
    context = QueryContext(time_from=end - timedelta(hours=1), time_to=end, interval=timedelta(minutes=1),
                           variables={"sensor": [str(n) for n in range(1, 51)], "variable": ["temperature"]})
    lines = []
    for title, ref, raw in panel_targets(load_dashboard()):
        sql = expand(raw, context)
        cells = []
        for layout in LAYOUTS:
            reader = login_url(dbs.url[layout], READER_TEST_ROLE)
            with psycopg.connect(reader) as conn:
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    conn.execute(sql).fetchall()  # built from the dashboard, not user input
                    times.append((time.perf_counter() - started) * 1000)
                plan = "\n".join(str(row[0]) for row in conn.execute("EXPLAIN " + sql).fetchall())
            touched = len(set(re.findall(r"\breadings_p\d{4}_\d{2}_\d{2}\b", plan)))
            scans = f", {touched} partitions in the plan" if layout == "partitioned" and "readings" in sql else ""
            cells.append(f"{layout} {statistics.median(times):.1f} ms{scans}")
        lines.append(f"dashboard '{title}' {ref}: " + "; ".join(cells))
    total = dbs.run("partitioned", "SELECT count(*) FROM partman.show_partitions('public.readings')")[0][0]
    lines.append(f"(the partitioned readings has {total} partitions)")
    return lines


def retention(dbs: Databases, rows: int) -> list[str]:
    """A day of `rows` readings: pg_partman's retention drops its partition; the plain table DELETEs them."""
    fill = """INSERT INTO readings (sensor_id, "timestamp", variable, value, unit)
              SELECT 5000 + i %% 1000, %s + i * (interval '1 day' / %s), 'retention', i, 'u'
              FROM generate_series(0, %s - 1) AS i"""
    for layout in LAYOUTS:
        dbs.run(layout, fill, (RETENTION_DAY, rows, rows))
        dbs.run(layout, "VACUUM ANALYZE readings")
    day_end = RETENTION_DAY + timedelta(days=1)
    delete_s = _timed(lambda: dbs.run("plain", 'DELETE FROM readings WHERE "timestamp" >= %s AND "timestamp" < %s',
                                      (RETENTION_DAY, day_end)))
    vacuum_s = _timed(lambda: dbs.run("plain", "VACUUM readings"))
    keep = datetime.now(UTC) - day_end - timedelta(minutes=1)  # drops what ends before the day ends, + 1 min
    drop_s = _timed(lambda: dbs.run(
        "partitioned", "SELECT partman.drop_partition_time('public.readings', p_retention := %s, "
        "p_keep_table := false)", (keep,)))
    left = dbs.run("partitioned", 'SELECT count(*) FROM readings WHERE "timestamp" < %s', (day_end,))[0][0]
    return [f"retention of a day of {rows:,} readings: DELETE {delete_s:.2f} s (+ VACUUM {vacuum_s:.2f} s) against "
            f"pg_partman dropping its partition {drop_s:.3f} s ({delete_s / drop_s:,.0f}x); left {left} rows"]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _span(values: list[float], spec: str = ",.0f") -> str:
    low, high = min(values), max(values)
    return f"{low:{spec}}" if len(values) == 1 else f"{low:{spec}}–{high:{spec}}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="single-reading messages per drain")
    parser.add_argument("--workers", type=int, default=2, help="bridge workers per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each layout, alternating")
    parser.add_argument("--prefill-rows", type=int, default=0,
                        help="then drain again into both tables holding this many older rows (e.g. 20000000)")
    parser.add_argument("--day-rows", type=int, default=1_000_000, help="readings in the day retention drops")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each dashboard query (median)")
    return parser.parse_args()


def main() -> int:
    """Start the servers, run every measurement, print the figures."""
    args = parse_args()
    pg, mq = PostgresServer(), MosquittoServer()
    started = time.monotonic()
    with harness.throwaway_servers(pg, mq, prefix="bench-partitioning-") as tmp:
        dbs = Databases(pg)
        dbs.partition()
        notes = retention(dbs, args.day_rows)
        print(notes[-1], flush=True)
        notes += drains(dbs, args, mq.url, tmp, label="into empty tables", tag="empty")
        notes += dashboards(dbs, args.repeat)
        if args.prefill_rows:
            days = args.prefill_rows // (2000 * len(VARIABLES) * 1440) + 2  # harness.prefill's span
            dbs.run("partitioned", "SELECT partman.create_partition_time('public.readings', "
                    "ARRAY(SELECT timestamptz '2024-01-01Z' + d * interval '1 day' FROM generate_series(0, %s) d))",
                    (days,))
            for layout in LAYOUTS:
                rows, seconds = harness.prefill(dbs.url[layout], args.prefill_rows)
                print(f"  prefilled {layout} with {rows:,} rows in {seconds:.0f} s", flush=True)
            notes += drains(dbs, args, mq.url, tmp, label=f"into tables of {args.prefill_rows:,} rows", tag="full")
        harness.print_notes(notes, started_at=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
