"""bridge.store.indoubt: how a batch whose COMMIT went unanswered is settled by the marker row, step by step.

The server is played by a fake marker: what the row holds on the server the
worker writes to now. The integration side (the swap's locking, a real
failover) is in tests/integration/test_indoubt.py and tests/faults/test_failover.py.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from bridge.store.indoubt import Attempt, Doubts
from bridge.store.staging import WriteResult

BATCH = ["a", "b"]
OTHER = ["c"]


def committed(doubts: Doubts[WriteResult], batch: list[str], result: WriteResult) -> Attempt[WriteResult]:
    """One transaction that swapped the marker, wrote and committed with its answer received."""
    attempt = doubts.begin(batch)
    assert doubts.marker_read(attempt, previous=None) is None
    doubts.committing(attempt, result)
    doubts.committed(attempt)
    return attempt


def lost(doubts: Doubts[WriteResult], batch: list[str], result: WriteResult) -> Attempt[WriteResult]:
    """One transaction whose COMMIT was sent and never answered."""
    attempt = doubts.begin(batch)
    assert doubts.marker_read(attempt, previous=None) is None
    doubts.committing(attempt, result)
    return attempt  # the connection dropped: committed() never comes


def test_a_batch_nothing_is_in_doubt_about_is_simply_written() -> None:
    doubts: Doubts[WriteResult] = Doubts()

    committed(doubts, BATCH, WriteResult(stored=2))

    assert doubts.pending is None


def test_a_lost_commit_whose_id_is_in_the_marker_is_confirmed_not_written_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2, rejected=1))

    retry = doubts.begin(BATCH)
    stored = doubts.marker_read(retry, previous=first.batch_id)  # the row holds the lost batch's id: it committed
    doubts.committing(retry, WriteResult())  # the sink commits the marker-only transaction with the stored result
    with caplog.at_level(logging.WARNING, logger="bridge.store.indoubt"):
        doubts.committed(retry)

    assert stored == WriteResult(stored=2, rejected=1), "the result of the first attempt, not written again"
    assert retry.confirming and doubts.pending is None
    assert f"batch {first.batch_id}" in caplog.text and "acknowledged without writing it again" in caplog.text


@pytest.mark.parametrize("marker", ["older batch", "no row"])
def test_a_lost_commit_whose_id_is_not_in_the_marker_is_written_again(
    marker: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """On a promoted standby the row holds what it had before the batch, whatever the transaction ids say."""
    doubts: Doubts[WriteResult] = Doubts()
    before = committed(doubts, OTHER, WriteResult(stored=1))
    first = lost(doubts, BATCH, WriteResult(stored=2))

    retry = doubts.begin(BATCH)
    with caplog.at_level(logging.WARNING, logger="bridge.store.indoubt"):
        stored = doubts.marker_read(retry, previous=before.batch_id if marker == "older batch" else None)

    assert stored is None, "written again"
    assert not retry.confirming
    assert doubts.pending is None, "settled the moment the locked row was read"
    assert f"batch {first.batch_id}" in caplog.text and "writing it again" in caplog.text


def test_a_batch_written_again_is_in_doubt_under_its_new_id_only() -> None:
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2))
    retry = doubts.begin(BATCH)
    doubts.marker_read(retry, previous=None)
    doubts.committing(retry, WriteResult(stored=2))  # and this answer is lost too

    assert doubts.pending is not None
    assert doubts.pending.batch_ids == {retry.batch_id}
    assert first.batch_id not in doubts.pending.batch_ids, "its transaction is over: that id can never appear"


def test_a_confirmation_whose_own_commit_is_lost_keeps_both_ids() -> None:
    """If the confirming COMMIT did not happen the row still holds the first id; if it did, its own id."""
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2))
    confirming = doubts.begin(BATCH)
    doubts.marker_read(confirming, previous=first.batch_id)
    doubts.committing(confirming, WriteResult(stored=2))  # lost again

    for marker in (first.batch_id, confirming.batch_id):
        again = Doubts[WriteResult]()
        again.pending = doubts.pending
        third = again.begin(BATCH)
        assert again.marker_read(third, previous=marker) == WriteResult(stored=2), f"marker {marker}"


def test_a_failure_before_the_marker_was_read_leaves_the_batch_in_doubt() -> None:
    """No connection, or the swap timed out waiting for the row: nothing was learnt."""
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2))

    doubts.begin(BATCH)  # ... and the transaction failed here

    assert doubts.pending is not None and doubts.pending.batch_ids == {first.batch_id}


def test_a_failure_after_the_marker_proved_the_batch_stored_keeps_it_in_doubt() -> None:
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2))
    confirming = doubts.begin(BATCH)

    doubts.marker_read(confirming, previous=first.batch_id)  # ... then the connection dropped before COMMIT

    assert doubts.pending is not None and doubts.pending.batch_ids == {first.batch_id}


def test_the_pipeline_moving_on_to_other_messages_drops_the_doubt(caplog: pytest.LogCaptureFixture) -> None:
    doubts: Doubts[WriteResult] = Doubts()
    first = lost(doubts, BATCH, WriteResult(stored=2))

    with caplog.at_level(logging.WARNING, logger="bridge.store.indoubt"):
        attempt = doubts.begin(OTHER)

    assert attempt.settling is None and doubts.pending is None
    assert f"batch {first.batch_id}'s outcome was never settled" in caplog.text


def test_every_attempt_has_a_fresh_id() -> None:
    doubts: Doubts[WriteResult] = Doubts()

    ids = {doubts.begin(BATCH).batch_id for _ in range(3)}

    assert len(ids) == 3 and all(isinstance(i, uuid.UUID) for i in ids)
