"""What both write paths of the sink share: the staging table, a staged batch, dead letters, the result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bridge.model import Delivery, Row
from iotcommon.contract import RejectionCode

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS bridge_staging (
    seq integer, sensor_id integer, "timestamp" timestamptz,
    variable text, value double precision, unit text, revision integer
) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = (
    'COPY bridge_staging (seq, sensor_id, "timestamp", variable, value, unit, revision) FROM STDIN (FORMAT BINARY)'
)
_STAGING_TYPES = ["int4", "int4", "timestamptz", "text", "float8", "text", "int4"]
_COPY_REJECTED = (
    "COPY rejected_messages (received_at, topic, payload, reason_code, reason, client_id) FROM STDIN (FORMAT BINARY)"
)
_REJECTED_TYPES = ["timestamptz", "text", "bytea", "text", "text", "text"]

RejectedRow = tuple[datetime, str, bytes, str, str, str]
StagedRow = tuple[int, int, datetime, str, float, str, int]  # seq, then a Row


@dataclass(slots=True)
class WriteResult:
    """What one committed batch did."""

    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    revised: int = 0  # update mode: readings that replaced a lower revision
    stale: int = 0  # update mode: lower revisions than the stored one, dead-lettered

    def add(self, other: WriteResult) -> None:
        """Accumulate another result into this one."""
        other.add_to(self)

    def add_to(self, totals: Any) -> None:
        """Add each outcome to the counter of the same name in `totals` (a WriteResult, or the worker's Stats)."""
        for name in OUTCOMES:
            setattr(totals, name, getattr(totals, name) + getattr(self, name))

    def __str__(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name in OUTCOMES)


# Every field of WriteResult is an outcome; Stats counts each under the same name.
OUTCOMES = tuple(f.name for f in fields(WriteResult))


@dataclass(slots=True)
class Staged:
    """A batch laid out for the database: rows numbered by `seq`, where each came from, dead letters."""

    client_id: str
    rows: list[StagedRow] = field(default_factory=list)
    origins: list[tuple[Delivery, int, Row]] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    _raw_readings: dict[int, Sequence[bytes]] = field(default_factory=dict)  # by id() of a delivery of this batch

    @classmethod
    def of(cls, batch: Sequence[Delivery], *, client_id: str) -> Staged:
        """Every reading and every validation rejection of a batch, in arrival order."""
        staged = cls(client_id)
        for delivery in batch:
            parsed = delivery.parsed
            for row, index in zip(parsed.rows, parsed.indexes, strict=True):
                staged.rows.append((len(staged.rows), *row))
                staged.origins.append((delivery, index, row))
            for rejection in parsed.rejections:
                staged.rejected.append((
                    delivery.received_at, delivery.topic, rejection.payload, rejection.code.value, rejection.reason,
                    client_id,
                ))
        return staged

    def dead_letter(self, seq: int, code: RejectionCode, reason: str) -> None:
        """Store the reading staged as `seq` in rejected_messages, with its own raw bytes."""
        delivery, index, _ = self.origins[seq]
        raw = self._raw_readings.get(id(delivery))
        if raw is None:
            # Split a valid array once, however many of its readings are dead letters:
            # a re-sent array of 600 conflicting readings would otherwise split it 600 times.
            raw = self._raw_readings[id(delivery)] = delivery.raw_readings()
        self.rejected.append((delivery.received_at, delivery.topic, raw[index], code.value, reason, self.client_id))

    def copy_rows(self, cur: psycopg.Cursor[Any]) -> None:
        """COPY the readings into the session's staging table."""
        copy_rows(cur, _COPY_STAGING, _STAGING_TYPES, self.rows)

    def copy_rejected(self, cur: psycopg.Cursor[Any]) -> None:
        """COPY the dead letters (validation's and the database step's) into rejected_messages."""
        if self.rejected:
            copy_rows(cur, _COPY_REJECTED, _REJECTED_TYPES, self.rejected)


def describe_stored(row: Row, *, value: float, unit: str, revision: int) -> str:
    """'sensor 5, temperature at <time> is already stored with value 1.0 'C'' (the revision when one is set)."""
    stored = f"value {value!r} {unit!r}" + (f" revision {revision}" if revision or row.revision else "")
    newcomer = f"{row.value!r} {row.unit!r}" + (f" revision {row.revision}" if revision or row.revision else "")
    return (
        f"a reading for sensor {row.sensor_id}, {row.variable} at {row.timestamp.isoformat()} is already stored "
        f"with {stored}; this one has {newcomer}"
    )


def copy_rows(cur: psycopg.Cursor[Any], statement: str, types: list[str], rows: Sequence[Sequence[object]]) -> None:
    """COPY rows in binary with the given column types."""
    with cur.copy(sql.SQL(statement)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
