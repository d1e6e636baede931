"""`python -m bridge replay-rejected`: wire settings, a database connection and the replay together."""

from __future__ import annotations

import argparse
import functools
import sys
from datetime import UTC, datetime

import psycopg

from bridge.config import Settings
from bridge.database import describe_database
from bridge.errors import SinkError
from bridge.model import Limits
from bridge.replay import criteria_from, replay_rejected
from bridge.replay_store import PostgresReplayStore

CONNECT_TIMEOUT_S = 5


def run_replay(settings: Settings, options: argparse.Namespace) -> int:
    """Replay rejected messages; print one line per message and a summary. Exit 0, or 1 on a database error."""
    conninfo = settings.conninfo()
    limits = Limits(max_payload_bytes=settings.max_payload_bytes, max_future_s=settings.max_future_s)
    try:
        with psycopg.connect(
            conninfo,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="bridge-replay",
            options=f"-c statement_timeout={settings.statement_timeout_ms}",
        ) as conn:
            summary = replay_rejected(
                PostgresReplayStore(conn),
                criteria_from(options),
                limits=limits,
                now=functools.partial(datetime.now, UTC),
                dry_run=options.dry_run,
                report=print,
            )
    except (psycopg.Error, SinkError) as exc:
        print(f"replay-rejected: database error at {describe_database(conninfo)} (DATABASE_URL): "
              f"{str(exc).strip()}", file=sys.stderr)
        return 1
    print(summary.line(dry_run=options.dry_run))
    return 0
