"""Pure judgements of replication: standbys and synchrony, replay lag by the WAL history, failovers, the reader."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from watchdog.checks import Status
from watchdog.replication import (
    FailoverWatch,
    PrimaryFacts,
    ReaderFacts,
    StandbyFacts,
    WalHistory,
    judge_failover,
    judge_reader,
    judge_replication,
    judge_replication_lag,
    observe_wal,
    replay_lag_s,
    required_sync,
)

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
SYNC = StandbyFacts("standby", "10.0.0.2", "streaming", "sync", 5000)
ASYNC = StandbyFacts("standby", "10.0.0.2", "streaming", "async", 5000)


def facts(*standbys: StandbyFacts, **fields: object) -> PrimaryFacts:
    base = PrimaryFacts(server="db1:5432", in_recovery=False, system_id=7, timeline=1, wal_lsn=5000,
                        sync_names="*", sees_replication=True, standbys=standbys)
    return replace(base, **fields)  # type: ignore[arg-type]


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(("names", "needed"), [
    ("", 0), ("  ", 0), ("*", 1), ("standby", 1), ("a, b", 1), ("2 (a, b, c)", 2), ("FIRST 2 (a, b)", 2),
    ("ANY 3 (a, b, c)", 3), ("any 1 (a, b)", 1),
])
def test_required_sync_reads_synchronous_standby_names(names: str, needed: int) -> None:
    assert required_sync(names) == needed


def test_a_synchronous_standby_streaming_is_ok_and_named() -> None:
    result = judge_replication(facts(SYNC), expected=1)

    assert result.status is Status.OK
    assert result.detail == "1 streaming, 1 synchronous: standby (10.0.0.2, streaming, sync)"


def test_no_standby_while_commits_wait_for_one_is_down_writes_wait() -> None:
    result = judge_replication(facts(), expected=1)

    assert result.status is Status.DOWN
    assert "0 synchronous standbys of the 1 every COMMIT waits for (synchronous_standby_names = '*')" in result.detail
    assert "writes wait" in result.detail and "none connected" in result.detail


def test_a_standby_still_catching_up_is_not_a_synchronous_copy_yet() -> None:
    catching_up = replace(SYNC, state="catchup", sync_state="potential")

    assert judge_replication(facts(catching_up), expected=1).status is Status.DOWN


def test_a_quorum_short_of_its_number_is_down() -> None:
    quorum = replace(SYNC, sync_state="quorum")

    assert judge_replication(facts(quorum, sync_names="ANY 2 (a, b)"), expected=2).status is Status.DOWN
    both = facts(quorum, replace(quorum, name="b"), sync_names="ANY 2 (a, b)")
    assert judge_replication(both, expected=2).status is Status.OK


def test_asynchronous_replication_is_degraded_a_failover_may_lose_readings() -> None:
    result = judge_replication(facts(ASYNC, sync_names=""), expected=1)

    assert result.status is Status.DEGRADED
    assert "replication is asynchronous" in result.detail and "lose acknowledged readings" in result.detail


def test_a_standby_not_matching_synchronous_standby_names_is_down_writes_wait() -> None:
    assert judge_replication(facts(ASYNC, sync_names="other"), expected=1).status is Status.DOWN


def test_fewer_standbys_than_expected_is_degraded_while_one_is_synchronous() -> None:
    result = judge_replication(facts(SYNC), expected=2)

    assert result.status is Status.DEGRADED
    assert result.detail.startswith("1 of 2 standbys streaming")


def test_what_makes_replication_unjudgeable_is_said() -> None:
    assert judge_replication(None, expected=1).status is Status.UNKNOWN
    on_standby = judge_replication(facts(in_recovery=True, timeline=None), expected=1)
    assert on_standby.status is Status.DEGRADED and "target_session_attrs=read-write" in on_standby.detail
    blind = judge_replication(facts(sees_replication=False), expected=1)
    assert blind.status is Status.DEGRADED and "GRANT pg_read_all_stats" in blind.detail
    assert judge_replication_lag(facts(sees_replication=False), WalHistory(), now=NOW, limit_s=30).status \
        is Status.UNKNOWN, "alerted once, as replication"


def test_the_wal_history_keeps_only_moves_and_forgets_what_no_limit_needs() -> None:
    history = WalHistory()
    for second, lsn in [(0, 100), (10, 100), (20, 200), (30, 300), (100, 400)]:
        history = observe_wal(history, lsn, at(second), limit_s=30)

    assert history.samples == ((at(100), 400),), "older than 2 x the limit: forgotten"
    kept = observe_wal(WalHistory(((at(0), 100), (at(20), 200))), 300, at(50), limit_s=30)
    assert kept.samples == ((at(0), 100), (at(20), 200), (at(50), 300))
    idle = observe_wal(WalHistory(((at(0), 100),)), 100, at(10), limit_s=30)
    assert idle.samples == ((at(0), 100),), "an idle primary adds nothing"
    assert observe_wal(idle, None, at(20), limit_s=30) == idle


def test_a_lower_wal_position_is_another_primary_and_starts_the_history_again() -> None:
    history = WalHistory(((at(0), 100), (at(10), 900)))

    assert observe_wal(history, 500, at(20), limit_s=30).samples == ((at(20), 500),)


def test_replay_lag_is_dated_by_the_first_wal_the_standby_has_not_replayed() -> None:
    history = WalHistory(((at(0), 100), (at(10), 200), (at(20), 300)))

    assert replay_lag_s(history, 300, at(25)) == 0
    assert replay_lag_s(history, 250, at(25)) == 5
    assert replay_lag_s(history, 150, at(25)) == 15
    assert replay_lag_s(history, 50, at(25)) == 25


def test_lag_over_the_limit_names_the_standby_and_what_it_means() -> None:
    history = WalHistory(((at(0), 1000), (at(10), 6000)))
    stuck = replace(SYNC, replay_lsn=5000)

    result = judge_replication_lag(facts(stuck, wal_lsn=6000), history, now=at(45), limit_s=30)

    assert result.status is Status.DEGRADED
    assert result.detail.startswith("standby standby (10.0.0.2) has not replayed WAL the primary wrote 35 s ago")
    assert judge_replication_lag(facts(stuck), history, now=at(40), limit_s=30).status is Status.OK


def test_lag_older_than_the_history_reads_more_than() -> None:
    history = WalHistory(((at(0), 6000),))

    result = judge_replication_lag(facts(replace(SYNC, replay_lsn=10)), history, now=at(70), limit_s=30)

    assert "more than 70 s ago" in result.detail


def test_without_a_standby_to_measure_the_lag_is_unknown_not_recovered() -> None:
    result = judge_replication_lag(facts(), WalHistory(), now=NOW, limit_s=30)

    assert result.status is Status.UNKNOWN


def test_the_first_primary_seen_is_the_baseline() -> None:
    result, watch = judge_failover(FailoverWatch(), facts(), now=NOW, clear_s=60)

    assert result.status is Status.OK and result.detail == "primary db1:5432 (timeline 1)"
    assert watch.current is not None and watch.changed_at is None


def test_a_new_timeline_is_a_failover_alerted_at_once_until_the_clear_time() -> None:
    _, watch = judge_failover(FailoverWatch(), facts(), now=NOW, clear_s=60)
    promoted = facts(timeline=2, server="db2:5432")

    result, watch = judge_failover(watch, promoted, now=at(10), clear_s=60)
    still, watch = judge_failover(watch, promoted, now=at(70), clear_s=60)
    cleared, watch = judge_failover(watch, promoted, now=at(71), clear_s=60)

    assert (result.status, result.confirmed) == (Status.DEGRADED, True)
    assert result.detail == "the primary changed: now db2:5432 (timeline 2), was db1:5432 (timeline 1)"
    assert still.status is Status.DEGRADED
    assert cleared.status is Status.OK and watch == FailoverWatch(watch.current)


def test_another_cluster_is_named_and_a_moved_address_alone_is_no_failover() -> None:
    _, watch = judge_failover(FailoverWatch(), facts(), now=NOW, clear_s=60)

    moved, _ = judge_failover(watch, facts(server="10.0.0.9:5432"), now=at(10), clear_s=60)
    restored, _ = judge_failover(watch, facts(system_id=8), now=at(10), clear_s=60)

    assert moved.status is Status.OK and moved.detail == "primary 10.0.0.9:5432 (timeline 1)"
    assert restored.status is Status.DEGRADED and "another database cluster" in restored.detail


def test_no_primary_answering_keeps_the_failover_state() -> None:
    _, watch = judge_failover(FailoverWatch(), facts(), now=NOW, clear_s=60)

    for seen in (None, facts(in_recovery=True, timeline=None)):
        result, kept = judge_failover(watch, seen, now=at(10), clear_s=60)
        assert result.status is Status.UNKNOWN and kept == watch


def test_the_reader_is_down_when_nothing_answers_and_says_which_server_did() -> None:
    assert judge_reader("cannot connect", None, elapsed_ms=0).detail == "DATABASE_READ_URL: cannot connect"
    assert judge_reader("cannot connect", None, elapsed_ms=0).status is Status.DOWN
    standby = judge_reader(None, ReaderFacts("db2:5432", in_recovery=True), elapsed_ms=4.2)
    assert (standby.status, standby.detail) == (Status.OK, "standby db2:5432 answers in 4 ms")
    fallback = judge_reader(None, ReaderFacts("db1:5432", in_recovery=False), elapsed_ms=4)
    assert fallback.status is Status.OK and "reads are not offloaded" in fallback.detail
