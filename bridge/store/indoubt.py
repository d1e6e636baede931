"""A commit whose outcome was lost: settled by the worker's marker row, on the server it writes to now.

When the connection drops while COMMIT is on its way (or COMMIT returns
without the synchronous standby's confirmation), the batch may or may not be
stored. Retrying blindly is safe for readings (the primary key absorbs a
second copy) but would store each dead letter of the batch a second time;
taking it as stored loses it if it is not. So every batch transaction first
swaps this worker's row of `bridge_progress` to a new batch id (locking the
row), and before the same batch is written again, the swap of the next
transaction says which id the row held:

- one of the in-doubt batch's ids: the batch is on this server. The new
  transaction writes nothing, and its COMMIT, which waits for the synchronous
  standby like any other, also confirms the earlier batch is replicated;
- anything else: the batch is not on this server; it is written again.

The answer travels with the data: on a promoted standby that never received
the batch, the row holds an older id, so the batch is written there. (The
transaction ids of txid_status() would not do: a promoted standby hands out
again the ids the old primary used for transactions it never saw.) While an
earlier transaction of this worker still holds the row (its COMMIT still
waiting for a standby), the swap waits for it, so "still in progress" settles
by itself. Two live workers with the same BRIDGE_CLIENT_ID serialise on the
row and stay correct, but one may find the other's id there and write its
in-doubt batch again: readings stay exactly once, its dead letters may be
stored twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg

logger = logging.getLogger(__name__)

R = TypeVar("R")

CREATE_MARKER = "INSERT INTO bridge_progress (client_id) VALUES (%s) ON CONFLICT (client_id) DO NOTHING"
# Lock the row, set the new id and return the one it held, in one round trip.
# FOR UPDATE in the subquery waits for an earlier transaction holding the row
# and then reads the row as that transaction left it.
_SWAP_MARKER = """
UPDATE bridge_progress AS marker SET batch_id = %(batch_id)s, updated_at = now()
FROM (SELECT client_id, batch_id FROM bridge_progress WHERE client_id = %(client_id)s FOR UPDATE) AS previous
WHERE marker.client_id = previous.client_id
RETURNING previous.batch_id
"""
# The row is gone (deleted by hand, or a database the worker did not check at
# start): create it with this batch's id; whatever it held is unknown.
_INSERT_MARKER = """
INSERT INTO bridge_progress (client_id, batch_id) VALUES (%(client_id)s, %(batch_id)s)
ON CONFLICT (client_id) DO UPDATE SET batch_id = EXCLUDED.batch_id, updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class InDoubt(Generic[R]):
    """A batch whose COMMIT went unconfirmed: the ids whose presence in the marker proves it stored, its result."""

    key: tuple[int, ...]
    batch_ids: frozenset[uuid.UUID]
    result: R

    @property
    def label(self) -> str:
        """The newest id, for log lines."""
        return str(max(self.batch_ids, key=str))


@dataclass(slots=True)
class Attempt(Generic[R]):
    """One transaction storing a batch, or confirming it when it turned out to be stored already."""

    key: tuple[int, ...]
    batch_id: uuid.UUID
    settling: InDoubt[R] | None  # the earlier attempt of the same batch whose outcome this one settles
    confirming: bool = field(default=False)  # the settled batch is on this server: write nothing


def batch_key(batch: Sequence[object]) -> tuple[int, ...]:
    """Identifies a batch across retries: the pipeline retries the very same delivery objects."""
    return tuple(id(item) for item in batch)


class Doubts(Generic[R]):
    """The worker's one batch in doubt, and the steps of a transaction that settles it (pure; the sink does I/O).

    begin() before the transaction, marker_read() after the swap, committing()
    just before COMMIT, committed() once COMMIT is confirmed. A failure at any
    step leaves pending what must be settled next.
    """

    def __init__(self) -> None:
        self.pending: InDoubt[R] | None = None

    def begin(self, batch: Sequence[object]) -> Attempt[R]:
        """A new attempt at `batch`, with a fresh id; it settles the batch in doubt if that is this one."""
        key = batch_key(batch)
        doubt = self.pending
        if doubt is not None and doubt.key != key:
            # The pipeline moved on to other messages (the one-by-one fallback): the
            # in-doubt one comes back under its own key only if it is retried alone.
            logger.warning("batch %s's outcome was never settled; it is no longer retried", doubt.label)
            self.pending = doubt = None
        return Attempt(key, uuid.uuid4(), doubt)

    def marker_read(self, attempt: Attempt[R], previous: uuid.UUID | None) -> R | None:
        """The stored result when the settled batch is on this server (`previous` is one of its ids), else None."""
        doubt = attempt.settling
        if doubt is None:
            return None
        if previous in doubt.batch_ids:
            attempt.confirming = True
            return doubt.result
        self.pending = None  # the row was not its: it did not commit here, and now it never will
        logger.warning("the outcome of batch %s was unknown and it is not on this server (the database failed "
                       "over, or its COMMIT never arrived): writing it again", doubt.label)
        return None

    def committing(self, attempt: Attempt[R], result: R) -> None:
        """COMMIT is about to be sent: if its answer is lost, any of these ids in the marker proves it stored."""
        ids = {attempt.batch_id}
        if attempt.confirming and attempt.settling is not None:
            ids |= attempt.settling.batch_ids
        self.pending = InDoubt(attempt.key, frozenset(ids), result)

    def committed(self, attempt: Attempt[R]) -> None:
        """COMMIT returned and the standby (if any) confirmed it: nothing in doubt any more."""
        self.pending = None
        if attempt.confirming and attempt.settling is not None:
            logger.warning("the outcome of batch %s was unknown; it is on this server and now confirmed: "
                           "acknowledged without writing it again", attempt.settling.label)


def swap_marker(conn: psycopg.Connection[Any], *, client_id: str, batch_id: uuid.UUID) -> uuid.UUID | None:
    """Set this worker's marker to `batch_id` (waiting for any transaction holding it); return the id it held."""
    params = {"client_id": client_id, "batch_id": batch_id}
    row = conn.execute(_SWAP_MARKER, params).fetchone()
    if row is None:
        conn.execute(_INSERT_MARKER, params)
        return None
    previous = row[0]
    return previous if isinstance(previous, uuid.UUID) else None
