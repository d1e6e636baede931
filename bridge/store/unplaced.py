"""Partitioned readings: the readings of a batch that no partition holds, dead-lettered one by one.

PostgreSQL refuses a whole statement when one row has no partition ("no
partition of relation ... found for row"). Then the sink asks the catalog
which of the batch's timestamps no partition holds, turns exactly those
readings into `no_partition` dead letters (each with its own raw bytes, like
a conflict) and writes the batch again: the other readings of the batch, and
of the same array, are stored as usual. replay-rejected stores the dead
letters once the partition exists.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import psycopg

from bridge.model import WHITESPACE, Delivery, Parsed, Rejection
from iotcommon.contract import RejectionCode
from iotcommon.partitions import over_ranges

_UNPLACED = over_ranges("""
WITH ranges AS ({ranges})
SELECT t FROM unnest(%(times)s::timestamptz[]) AS t
WHERE NOT EXISTS (SELECT 1 FROM ranges WHERE t >= ranges.lower AND t < ranges.upper)
""")


def find_unplaced(
    conn: psycopg.Connection[Any], batch: Sequence[Delivery], *, table: str = "readings"
) -> set[datetime]:
    """The timestamps of the batch's readings that no partition of `table` holds."""
    times = sorted({row.timestamp for delivery in batch for row in delivery.parsed.rows})
    rows = conn.execute(_UNPLACED, {"table": table, "times": times}).fetchall()
    return {row[0] for row in rows}


def set_aside(batch: Sequence[Delivery], unplaced: Collection[datetime], *, table: str = "readings") -> list[Delivery]:
    """The batch with each reading dated in `unplaced` turned into a `no_partition` rejection; the rest unchanged."""
    return [_set_aside_one(delivery, unplaced, table) for delivery in batch]


def _set_aside_one(delivery: Delivery, unplaced: Collection[datetime], table: str) -> Delivery:
    parsed = delivery.parsed
    refused = {position for position, row in enumerate(parsed.rows) if row.timestamp in unplaced}
    if not refused:
        return delivery
    raw = delivery.raw_readings()
    in_array = bool(parsed.elements) or delivery.payload.lstrip(WHITESPACE)[:1] == b"["
    rejections = list(parsed.rejections)
    for position in sorted(refused):
        index, row = parsed.indexes[position], parsed.rows[position]
        prefix = f"element {index}: " if in_array else ""
        reason = (
            f"{prefix}timestamp: no partition of {table} holds {row.timestamp.isoformat()} (partition "
            "maintenance is behind, or retention dropped that time); replay it once the partition exists"
        )
        rejections.append(Rejection(raw[index], RejectionCode.NO_PARTITION, reason))
    kept = [position for position in range(len(parsed.rows)) if position not in refused]
    moved = Parsed(
        tuple(parsed.rows[p] for p in kept), tuple(parsed.indexes[p] for p in kept), tuple(rejections),
        parsed.elements,
    )
    return delivery._replace(parsed=moved)
