"""A commit whose outcome was lost with the connection: asked of the server, not guessed.

When the connection drops while COMMIT is on its way, the transaction may or
may not have committed. Retrying blindly is safe for readings (the primary key
absorbs a second copy) but would store each rejected message of the batch a
second time. So every batch notes its transaction id (txid_current()), and
before the same batch is written again the server is asked what became of it
(txid_status(), PostgreSQL's answer to exactly this question:
https://www.postgresql.org/docs/current/functions-info.html#FUNCTIONS-PG-SNAPSHOT).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg

logger = logging.getLogger(__name__)

TXID = "SELECT txid_current()"
_STATUS = "SELECT txid_status(%s)"
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class InDoubt(Generic[R]):
    """A batch whose COMMIT was sent but not answered: its transaction, and what it would have stored."""

    key: tuple[int, ...]
    txid: int
    result: R


def batch_key(batch: Sequence[object]) -> tuple[int, ...]:
    """Identifies a batch across retries: the pipeline retries the very same delivery objects."""
    return tuple(id(item) for item in batch)


class Outcome:
    """What the server says of an in-doubt transaction."""

    COMMITTED = "committed"
    ABORTED = "aborted"
    IN_PROGRESS = "in progress"
    UNKNOWN = "unknown"  # too old for the server to remember: retried, at-least-once for dead letters


def ask_status(conn: psycopg.Connection[Any], txid: int) -> str:
    """txid_status() of a transaction: committed, aborted, in progress, or unknown."""
    row = conn.execute(_STATUS, (txid,)).fetchone()
    return str(row[0]) if row and row[0] is not None else Outcome.UNKNOWN


def log_resolution(doubt: InDoubt[Any], status: str) -> None:
    """One line saying what an in-doubt batch turned out to be."""
    if status == Outcome.COMMITTED:
        logger.warning("the connection was lost while committing transaction %d; it had committed: "
                       "the batch is not written again", doubt.txid)
    elif status == Outcome.UNKNOWN:
        logger.warning("the connection was lost while committing transaction %d and the server no longer "
                       "knows its outcome: writing the batch again (its dead letters may be stored twice)", doubt.txid)
    else:
        logger.info("the connection was lost while committing transaction %d; it had not committed (%s): "
                    "writing the batch again", doubt.txid, status)
