"""bridge.stats: the counters a worker keeps, in its stop summary and its heartbeat."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from fakes import T0

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

    counters = dataclasses.asdict(stats)
    del counters["commit_started_at"]  # the heartbeat says how long, not since when
    assert beat.model_dump(exclude={"client_id", "at", "commit_wait_s", "commit_stalled"}) == counters
    assert Stats().heartbeat(client_id="w1", at=T0).last_commit_at is None


def test_a_commit_in_progress_shows_how_long_it_has_waited_and_when_it_is_stalled() -> None:
    stats = Stats()
    stats.commit_started(T0)

    waiting = stats.heartbeat(client_id="w1", at=T0 + timedelta(seconds=4.5), commit_wait_warn_s=5)
    stalled = stats.heartbeat(client_id="w1", at=T0 + timedelta(seconds=6), commit_wait_warn_s=5)
    stats.commit_ended()
    done = stats.heartbeat(client_id="w1", at=T0 + timedelta(seconds=7), commit_wait_warn_s=5)

    assert (waiting.commit_wait_s, waiting.commit_stalled) == (4.5, False)
    assert (stalled.commit_wait_s, stalled.commit_stalled) == (6.0, True)
    assert (done.commit_wait_s, done.commit_stalled) == (0.0, False)
