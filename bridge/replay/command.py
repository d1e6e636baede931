"""`python -m bridge replay-rejected`: its options, and the wiring of settings, a connection and the replay."""

from __future__ import annotations

import argparse
import functools
import sys
from datetime import UTC, datetime

import psycopg

from bridge.config import Settings
from bridge.errors import SinkError
from bridge.replay.planning import Criteria, replay_rejected
from bridge.replay.postgres import PostgresReplayStore
from bridge.store import Database
from iotcommon.contract import READINGS_FILTER, RejectionCode


def run_replay(settings: Settings, options: argparse.Namespace) -> int:
    """Replay rejected messages; print one line per message and a summary. Exit 0, or 1 on a database error."""
    database = Database(settings.conninfo(), "bridge-replay", settings.statement_timeout_ms)
    limits = settings.limits
    try:
        with database.connect() as conn:
            summary = replay_rejected(
                PostgresReplayStore(conn),
                criteria_from(options),
                limits=limits,
                now=functools.partial(datetime.now, UTC),
                dry_run=options.dry_run,
                report=print,
            )
    except (psycopg.Error, SinkError) as exc:
        print(f"replay-rejected: database error at {database.where} (DATABASE_URL): "
              f"{str(exc).strip()}", file=sys.stderr)
        return 1
    print(summary.line(dry_run=options.dry_run))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m bridge replay-rejected`."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge replay-rejected",
        description="Re-validate rejected messages under the current settings and store those now valid.",
    )
    parser.add_argument("--since", type=parse_instant, help="received at or after (ISO 8601; no offset = UTC)")
    parser.add_argument("--until", type=parse_instant, help="received before (ISO 8601; no offset = UTC)")
    parser.add_argument("--reason", help="only rejections whose reason contains this text")
    parser.add_argument("--code", action="append", choices=[code.value for code in RejectionCode], metavar="CODE",
                        help="only rejections with this reason code (README, \"Rejection codes\"); repeatable")
    parser.add_argument("--topic", help=f"only this topic, or an MQTT filter such as {READINGS_FILTER}")
    parser.add_argument("--limit", type=_positive, help="replay at most N rejected messages (oldest first)")
    parser.add_argument("--again", action="store_true", help="also replay messages replayed before")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen; write nothing")
    return parser


def criteria_from(args: argparse.Namespace) -> Criteria:
    """Criteria from parsed command-line options."""
    return Criteria(
        since=args.since, until=args.until, reason=args.reason, topic=args.topic, limit=args.limit, again=args.again,
        codes=frozenset(RejectionCode(code) for code in args.code or ()),
    )


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; an operator typing a bare date or time means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value
