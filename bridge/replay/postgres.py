"""The PostgreSQL side of dead-letter replay: read rejected messages, store readings and replay records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

from bridge.errors import SinkUnavailable
from bridge.model import Row
from bridge.replay.planning import RejectedMessage, ReplayOutcome
from bridge.store import CommitWarnings, translate
from iotcommon.contract import RejectionCode

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
# Keyset pages by id: each page is a short statement, so replay never holds a
# long-running snapshot while it commits row by row.
_CANDIDATES = """
SELECT m.id, m.received_at, m.topic, m.payload, m.reason, m.reason_code,
       EXISTS (SELECT 1 FROM rejected_replays r WHERE r.rejected_id = m.id)
FROM rejected_messages m
WHERE m.id > %(after)s
  AND (%(since)s::timestamptz IS NULL OR m.received_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR m.received_at < %(until)s::timestamptz)
ORDER BY m.id
LIMIT %(page)s
"""
# The same ON CONFLICT DO NOTHING as the sink: a stored reading is never overwritten.
_INSERT = """
INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, revision)
SELECT * FROM unnest(%s::integer[], %s::timestamptz[], %s::text[], %s::double precision[], %s::text[], %s::integer[])
ON CONFLICT DO NOTHING
"""
_RECORD = "INSERT INTO rejected_replays (rejected_id, outcome, detail, readings_stored) VALUES (%s, %s, %s, %s)"


class PostgresReplayStore:
    """Reads rejected messages and commits each replay (readings + record) in one transaction."""

    def __init__(self, conn: psycopg.Connection[Any], *, page_size: int = PAGE_SIZE) -> None:
        self._conn = conn
        self._conn.autocommit = True  # each store() opens its own transaction
        self._page_size = page_size
        self._warnings = CommitWarnings()
        self._warnings.watch(conn)

    def candidates(self, *, since: datetime | None, until: datetime | None) -> Iterator[RejectedMessage]:
        """Rejected messages received in [since, until), oldest id first, a page at a time."""
        after = 0
        while True:
            params = {"after": after, "since": since, "until": until, "page": self._page_size}
            try:
                rows = self._conn.execute(_CANDIDATES, params).fetchall()
            except psycopg.Error as exc:
                raise translate(exc, doing="cannot read rejected_messages") from exc
            for id_, received_at, topic, payload, reason, code, replayed in rows:
                yield RejectedMessage(id_, received_at, topic, bytes(payload), reason, _code(code), replayed)
            if len(rows) < self._page_size:
                return
            after = rows[-1][0]

    def store(self, rejected_id: int, rows: Sequence[Row], decide: Callable[[int], ReplayOutcome]) -> ReplayOutcome:
        """Insert the rows and the replay record together; raise SinkRefused or SinkUnavailable.

        A COMMIT that returns without the synchronous standby's confirmation stops
        the run (SinkUnavailable): the replay is on the primary only until then.
        """
        self._warnings.clear()
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                stored = 0
                if rows:
                    cur.execute(_INSERT, [list(column) for column in zip(*rows, strict=True)])
                    stored = max(cur.rowcount, 0)
                outcome = decide(stored)
                cur.execute(_RECORD, (rejected_id, outcome.result.value, outcome.detail, outcome.readings_stored))
        except psycopg.Error as exc:
            raise translate(exc) from exc
        warning = self._warnings.take()
        if warning is not None:
            raise SinkUnavailable(
                f"the replay of rejected message #{rejected_id} committed on the primary, but the synchronous "
                f"standby did not confirm it ({warning}). Nothing is lost (the rejected message stays): check "
                "the standby, then run replay-rejected again"
            )
        logger.debug("rejected message %d replayed: %s", rejected_id, outcome.result)
        return outcome


def _code(text: str) -> RejectionCode:
    """The stored code; a code this release does not know (written by a newer one) reads as unknown."""
    try:
        return RejectionCode(text)
    except ValueError:
        return RejectionCode.UNKNOWN
