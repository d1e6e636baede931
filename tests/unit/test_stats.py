"""bridge.stats: the counters a worker keeps, in its stop summary and its heartbeat."""

from __future__ import annotations

import dataclasses

from fakes import T0

from bridge.staging import OUTCOMES, WriteResult
from bridge.stats import Stats


def test_summary_names_every_counter() -> None:
    stats = Stats(received=10, stored=6, duplicates=2, conflicts=1, rejected=1, in_flight=4, revised=3, stale=2)

    summary = stats.summary()

    for part in ("received=10", "stored=6", "duplicates=2", "conflicts=1", "rejected=1", "in_flight=4", "revised=3",
                 "stale=2"):
        assert part in summary


def test_the_summary_keeps_the_older_counters_first_and_in_order() -> None:
    """What parses the line of the release before (an operator's grep, a test's regex) still finds them."""
    assert Stats().summary().startswith(
        "received=0 stored=0 duplicates=0 conflicts=0 rejected=0 in_flight=0 ")


def test_every_counter_goes_into_the_heartbeat() -> None:
    stats = Stats(received=1, stored=2, duplicates=3, conflicts=4, rejected=5, handler_errors=6, batches=7,
                  db_errors=8, in_flight=9, inbox_peak=10, last_commit_at=T0, db_ok=False, mqtt_connected=True,
                  revised=11, stale=12)

    beat = stats.heartbeat(client_id="w1", at=T0)

    assert beat.model_dump(exclude={"client_id", "at"}) == dataclasses.asdict(stats)
    assert Stats().heartbeat(client_id="w1", at=T0).last_commit_at is None


def test_every_outcome_of_a_committed_batch_has_its_counter() -> None:
    result = WriteResult(stored=1, duplicates=2, conflicts=3, rejected=4, revised=5, stale=6)
    stats = Stats()
    result.add_to(stats)
    result.add_to(stats)
    assert OUTCOMES == ("stored", "duplicates", "conflicts", "rejected", "revised", "stale")
    assert [getattr(stats, name) for name in OUTCOMES] == [2, 4, 6, 8, 10, 12]
    assert str(result) == "stored=1 duplicates=2 conflicts=3 rejected=4 revised=5 stale=6"
