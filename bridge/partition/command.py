"""`python -m bridge partition setup|maintain|status`: partitioned readings and retention, from the command line.

setup     install pg_partman, convert readings (empty or filled) if it is not
          partitioned yet, apply PARTITION_PREMAKE / PARTITION_RETENTION; idempotent
maintain  one maintenance run: pg_partman's for readings, then the retention of
          reading_revisions and rejected_messages (--every S: again every S seconds)
status    the partitions, how many are premade ahead, and pg_partman's config
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bridge.partition.partman import OLD, PartitionError, configure, convert, install, read_layout
from bridge.partition.retention import maintain
from bridge.partition.settings import PartitionSettings
from bridge.store import describe_database
from iotcommon.errors import ConfigError
from iotcommon.signals import on_stop_signal

APPLICATION_NAME = "bridge-partition"


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m bridge partition`."""
    parser = argparse.ArgumentParser(prog="python -m bridge partition", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["setup", "maintain", "status"])
    parser.add_argument("--every", type=float, metavar="SECONDS",
                        help="maintain: run again every SECONDS until SIGTERM (where no background worker runs it)")
    return parser


def main(argv: list[str]) -> int:
    """Run one action; exit 0, 1 on a database or partitioning error, 2 on a configuration error."""
    options = build_parser().parse_args(argv)
    try:
        settings = PartitionSettings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    action: Callable[[psycopg.Connection[Any], PartitionSettings], None] = {
        "setup": run_setup, "status": run_status, "maintain": run_maintain}[options.action]
    where = describe_database(settings.conninfo())
    stop = threading.Event()
    if options.every:
        on_stop_signal(lambda name: stop.set())
    while True:
        try:
            with connect(settings) as conn:
                action(conn, settings)
        except PartitionError as exc:
            print(f"partition {options.action}: {exc}", file=sys.stderr)
            return 1
        except psycopg.Error as exc:
            print(f"partition {options.action}: database error at {where} (DATABASE_URL): "
                  f"{' '.join(str(exc).split())}", file=sys.stderr)
            if not options.every:
                return 1
        if not options.every or stop.wait(options.every):
            return 0


def connect(settings: PartitionSettings) -> psycopg.Connection[Any]:
    """An autocommit connection as the owner: UTC (pg_partman names partitions by the session's time zone)."""
    return psycopg.connect(settings.conninfo(), autocommit=True, application_name=APPLICATION_NAME,
                           connect_timeout=10, options="-c TimeZone=UTC -c statement_timeout=0")


def run_setup(conn: psycopg.Connection[Any], settings: PartitionSettings) -> None:
    """Install, convert if needed, configure; print what happened."""
    major = install(conn)
    if read_layout(conn).partitioned:
        configure(conn, settings)
        print(f"partition setup: readings is already partitioned; premake {settings.premake}, "
              f"retention {settings.retention} applied")
    else:
        done = convert(conn, settings, major=major)
        conn.execute("ANALYZE readings")
        print(f"partition setup: readings converted in {done.held_s:.1f} s (ingestion held that long): "
              f"{done.rows} rows in {done.partitions} partitions of {settings.interval}, "
              f"{done.set_aside} set aside in rejected_messages"
              + (f"; the old table is kept as {OLD}: check it, then DROP TABLE {OLD}" if done.rows else ""))
    print(maintain(conn, settings).line())


def run_maintain(conn: psycopg.Connection[Any], settings: PartitionSettings) -> None:
    """One maintenance run and its summary line."""
    print(maintain(conn, settings).line(), flush=True)


def run_status(conn: psycopg.Connection[Any], settings: PartitionSettings) -> None:
    """The layout of readings: partitions, the premade ones ahead, the default partition, pg_partman's config."""
    layout = read_layout(conn)
    if not layout.partitioned:
        print("readings is not partitioned (python -m bridge partition setup partitions it)")
        return
    now = datetime.now(UTC)
    first, last = (layout.ranges[0][0], layout.ranges[-1][1]) if layout.ranges else (None, None)
    print(f"readings: {len(layout.ranges)} partitions from {first} to {last}, {layout.ahead(now)} premade ahead"
          f"{', and a DEFAULT partition' if layout.has_default else ''}")
    row = conn.execute("SELECT partition_interval, premake, retention, infinite_time_partitions "
                       "FROM partman.part_config WHERE parent_table = 'public.readings'").fetchone()
    if row:
        print(f"pg_partman: interval {row[0]}, premake {row[1]}, retention {row[2] or 'none'}, "
              f"infinite_time_partitions {row[3]}")
