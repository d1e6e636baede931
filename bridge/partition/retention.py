"""Maintenance of the growing tables: pg_partman's run for readings, and a retention for the unpartitioned ones.

readings' partitions are made and dropped by pg_partman (its background
worker, or this). reading_revisions and rejected_messages stay unpartitioned:
a dead letter must be storable even while partition maintenance is behind,
which is what makes "no partition" a dead letter instead of an outage. They
are small, so their retention deletes in short batches, each its own
transaction, never holding a lock the workers wait for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from bridge.partition.partman import PARENT, read_layout
from bridge.partition.settings import PartitionSettings

logger = logging.getLogger(__name__)

BATCH_ROWS = 10_000

# A replay record goes with the dead letter it replayed (rejected_replays references it).
_EXPIRE_REJECTED = """
WITH expired AS (SELECT id FROM rejected_messages WHERE received_at < now() - %(keep)s::interval
                 ORDER BY id LIMIT %(batch)s),
     replays AS (DELETE FROM rejected_replays WHERE rejected_id IN (SELECT id FROM expired))
DELETE FROM rejected_messages WHERE id IN (SELECT id FROM expired)
"""
_EXPIRE_REVISIONS = """
DELETE FROM reading_revisions WHERE id IN (
    SELECT id FROM reading_revisions WHERE replaced_at < now() - %(keep)s::interval ORDER BY id LIMIT %(batch)s)
"""


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one maintenance run did."""

    partitions_made: int
    partitions_dropped: int
    revisions_deleted: int
    rejected_deleted: int

    def line(self) -> str:
        """The one-line summary printed after a run."""
        return (f"partition maintain: partitions made={self.partitions_made} dropped={self.partitions_dropped} "
                f"revisions deleted={self.revisions_deleted} dead letters deleted={self.rejected_deleted}")


def maintain(conn: psycopg.Connection[Any], settings: PartitionSettings) -> Maintenance:
    """Run pg_partman's maintenance of readings (if partitioned), then the small tables' retention.

    `conn` is in autocommit mode: each step commits on its own.
    """
    before = read_layout(conn)
    if before.partitioned:
        conn.execute("SELECT partman.run_maintenance(%s)", (PARENT,))
    after = read_layout(conn)
    old, new = set(before.ranges), set(after.ranges)
    return Maintenance(
        partitions_made=len(new - old),
        partitions_dropped=len(old - new),
        revisions_deleted=expire(conn, _EXPIRE_REVISIONS, settings.kept(settings.revisions_retention)),
        rejected_deleted=expire(conn, _EXPIRE_REJECTED, settings.kept(settings.rejected_retention)),
    )


def expire(conn: psycopg.Connection[Any], statement: str, keep: str | None) -> int:
    """Run a batched DELETE until a batch is short; nothing when `keep` is None (keep everything)."""
    if keep is None:
        return 0
    total = 0
    while True:
        deleted = max(conn.execute(statement, {"keep": keep, "batch": BATCH_ROWS}).rowcount, 0)
        total += deleted
        if deleted < BATCH_ROWS:
            return total
