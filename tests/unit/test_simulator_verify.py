"""simulator.verify: polling, the verdict, and waiting (through simulator.replica) for a standby to replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fakes import FakeClock

from simulator.readings import Expected, Key
from simulator.replica import ReplayPosition
from simulator.report import VerifySummary
from simulator.verify import StoredRow, verify

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
KEYS: list[Key] = [(1, T0 + timedelta(seconds=n), "temperature#rtest") for n in range(3)]
EXPECTED = {key: Expected(20.0, "C") for key in KEYS}
PUBLISHED = dict.fromkeys(KEYS, T0)


@dataclass
class FakeStore:
    """A run's rows appearing on the reader, and the reader's replay positions (None: a primary)."""

    clock: FakeClock
    rows_after_s: float = 0.0  # the rows are visible from this time on
    positions: list[ReplayPosition | None] | None = None  # one per replay_position() call, the last one repeated
    asked: list[float] = field(default_factory=list)

    def count_readings(self) -> int:
        return len(KEYS) if self.clock.t >= self.rows_after_s else 0

    def readings(self) -> list[StoredRow]:
        stored = T0 + timedelta(seconds=1)
        return [(*key, 20.0, "C", stored) for key in KEYS] if self.count_readings() else []

    def count_rejected(self) -> int:
        return 0

    def replay_position(self) -> ReplayPosition | None:
        if self.positions is None:
            return None
        self.asked.append(self.clock.t)
        return self.positions.pop(0) if len(self.positions) > 1 else self.positions[0]


def run(store: FakeStore, *, primary: int | None, timeout_s: float = 10) -> tuple[VerifySummary, list[int | None]]:
    calls: list[int | None] = []

    def primary_lsn() -> int | None:
        calls.append(primary)
        return primary

    summary = verify(store, EXPECTED, PUBLISHED, rejected_expected=0, timeout_s=timeout_s, clock=store.clock,
                     poll_s=0.25, primary_lsn=primary_lsn)
    return summary, calls


def standby(received: int, replayed: int) -> ReplayPosition:
    return ReplayPosition("db2:5432", received, replayed)


def test_on_a_primary_nothing_is_waited_for_and_the_primary_is_not_asked() -> None:
    summary, calls = run(FakeStore(FakeClock()), primary=500)

    assert summary.ok and summary.replica is None
    assert calls == []


def test_on_a_standby_verify_waits_until_it_replayed_the_primarys_wal_and_says_so() -> None:
    clock = FakeClock()
    store = FakeStore(clock, rows_after_s=1.0, positions=[standby(900, 700), standby(900, 800), standby(1000, 1000)])

    summary, calls = run(store, primary=1000)

    assert summary.ok and calls == [1000]
    assert summary.waited_s == 1.0  # the rows took 1 s to show
    replica = summary.replica
    assert replica is not None
    assert (replica.server, replica.target_lsn, replica.target_source) == ("db2:5432", "0/3E8", "primary")
    assert (replica.caught_up, replica.behind_bytes, replica.waited_s) == (True, 0, 0.2)
    assert replica.text() == ("replica: read from the standby db2:5432 (DATABASE_READ_URL); waited 0.20 s for it "
                              "to replay the primary's WAL up to 0/3E8")


def test_without_a_primary_to_ask_the_standby_replays_what_it_had_received() -> None:
    store = FakeStore(FakeClock(), positions=[standby(900, 850), standby(950, 900)])

    summary, _ = run(store, primary=None)

    assert summary.replica is not None and summary.replica.caught_up
    assert (summary.replica.target_lsn, summary.replica.target_source) == ("0/384", "standby")
    assert "replay the WAL it had received up to 0/384" in summary.replica.text()


def test_a_standby_that_never_catches_up_is_reported_as_possible_lag_not_loss() -> None:
    clock = FakeClock()
    store = FakeStore(clock, rows_after_s=99, positions=[standby(2000, 1500)])  # replay paused: rows never show

    summary, _ = run(store, primary=2000, timeout_s=3)

    assert not summary.ok and summary.missing == len(KEYS)
    replica = summary.replica
    assert replica is not None and not replica.caught_up and replica.behind_bytes == 500
    assert clock.t < 3.5, "the wait for the replay stays within --verify-timeout"
    assert "500 bytes short of the primary's WAL at 0/7D0" in replica.text()
    assert replica.text().endswith("missing readings may be replication lag, not loss")


def test_a_standby_promoted_during_the_wait_ends_it() -> None:
    clock = FakeClock()
    store = FakeStore(clock, positions=[standby(1000, 500), standby(1000, 600), None])

    summary, _ = run(store, primary=1000)

    assert summary.replica is not None and not summary.replica.caught_up and summary.replica.behind_bytes == 400
    assert clock.t < 1, "no waiting for a replay that will not come"
