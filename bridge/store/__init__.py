"""Where a message is stored: batches, dead letters and corrections written to PostgreSQL, exactly once.

`PostgresSink` writes a batch in one transaction (sink); the in-doubt marker
(indoubt), the staging table (staging), corrections (corrections, revisions)
and readings no partition holds (unplaced) are its parts. `Database` and the
one error mapping (database) serve replay and the partition command too.
"""

from __future__ import annotations

from bridge.store.database import CommitWarnings, Database, describe_database, translate
from bridge.store.revisions import OnConflict
from bridge.store.sink import PostgresSink, Sink, check_schema
from bridge.store.staging import WriteResult

__all__ = [
    "CommitWarnings",
    "Database",
    "OnConflict",
    "PostgresSink",
    "Sink",
    "WriteResult",
    "check_schema",
    "describe_database",
    "translate",
]
