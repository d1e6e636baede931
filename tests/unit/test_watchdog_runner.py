"""watchdog.runner: check cycles with a fake watcher, fake probes and a fixed clock; the health file and table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes import heartbeat

from iotcommon.contract import WorkerStatus
from watchdog.checks import Status, WorkerRules, WorkerView
from watchdog.database import PrimaryProbe, ReaderProbe
from watchdog.replication import PrimaryFacts, ReaderFacts, ReplicationRules, StandbyFacts
from watchdog.runner import Limits, Watchdog, check_health, status_table
from watchdog.state import Alert, AlertBook
from watchdog.watcher import Observations

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


@dataclass
class FakeWatcher:
    broker_error: str | None = None
    views: dict[str, WorkerView] | None = None
    listening_since: datetime = NOW - timedelta(hours=1)

    def probe(self, timeout_s: float) -> tuple[str | None, float]:
        return self.broker_error, 0.003

    def observations(self) -> Observations:
        return Observations(self.views or {}, 0, self.listening_since)


def build(watcher: FakeWatcher, database: list[str | None], tmp_path: Path, sent: list[Alert]) -> Watchdog:
    limits = Limits(
        broker_timeout_s=1, database_timeout_s=1, expected_workers=("b1",), min_workers=1,
        rules=WorkerRules(heartbeat_timeout_s=15, stall_s=60), data_loss_clear_s=60,
    )
    return Watchdog(
        watcher, lambda timeout_s: PrimaryProbe(database.pop(0) if database else None),
        book=AlertBook(threshold=2, remind_s=1800), submit=sent.append,
        limits=limits, health_path=str(tmp_path / "wd.health"), now=lambda: NOW,
    )


def test_cycles_alert_on_state_changes_only_and_refresh_the_health_file(tmp_path: Path) -> None:
    alive = WorkerView("b1", WorkerStatus.ONLINE, heartbeat(), NOW - timedelta(seconds=2))
    sent: list[Alert] = []
    watchdog = build(FakeWatcher(views={"b1": alive}), ["refused", "refused", "refused", None], tmp_path, sent)

    statuses = [{r.component: r.status for r in watchdog.run_cycle()} for _ in range(5)]

    assert statuses[0] == {"broker": Status.OK, "database": Status.DOWN, "b1": Status.OK, "workers": Status.OK,
                           "broker-data-loss": Status.OK}
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "database"), ("RECOVERED", "database")]
    health = json.loads((tmp_path / "wd.health").read_text())
    assert health["cycles"] == 5 and health["down"] == [] and health["components"]["database"] == "ok"
    assert check_health(str(tmp_path / "wd.health"), now=NOW + timedelta(seconds=5), max_age_s=30)[0]
    assert not check_health(str(tmp_path / "wd.health"), now=NOW + timedelta(seconds=31), max_age_s=30)[0]
    assert not check_health(str(tmp_path / "missing"), now=NOW, max_age_s=30)[0]


def test_broker_down_makes_workers_unknown_not_down(tmp_path: Path) -> None:
    sent: list[Alert] = []
    watchdog = build(FakeWatcher(broker_error="connection refused"), [], tmp_path, sent)

    for _ in range(3):
        results = watchdog.run_cycle()

    assert {r.component: r.status for r in results}["b1"] is Status.UNKNOWN
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "broker")]


def test_once_is_not_patient_and_the_table_lists_everything(tmp_path: Path) -> None:
    watchdog = build(FakeWatcher(listening_since=NOW), [], tmp_path, [])

    patient = {r.component: r.status for r in watchdog.check()}
    table = status_table(watchdog.check(patient=False)).splitlines()

    assert patient["b1"] is Status.UNKNOWN, "a continuous watchdog that just subscribed waits for heartbeats"

    assert table[0].split() == ["COMPONENT", "STATUS", "DETAIL"]
    assert [line.split()[:2] for line in table[1:]] == [
        ["broker", "OK"], ["database", "OK"], ["b1", "DOWN"], ["workers", "DOWN"], ["broker-data-loss", "OK"]
    ]


# --- replication (WATCHDOG_STANDBYS) and the reader (DATABASE_READ_URL) ------------------------------

SYNC = StandbyFacts("standby", "10.0.0.2", "streaming", "sync", 1000)


def primary(*standbys: StandbyFacts, timeline: int = 1, server: str = "db1:5432", lsn: int = 1000) -> PrimaryFacts:
    return PrimaryFacts(server=server, in_recovery=False, system_id=7, timeline=timeline, wal_lsn=lsn,
                        sync_names="*", sees_replication=True, standbys=standbys)


class Clock:
    """Moved on 10 s by each primary probe: one cycle."""

    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


def build_replicated(
    facts: list[PrimaryFacts], tmp_path: Path, sent: list[Alert], reader: list[ReaderProbe] | None = None,
    watcher: FakeWatcher | None = None,
) -> Watchdog:
    limits = Limits(
        broker_timeout_s=1, database_timeout_s=1, expected_workers=tuple(watcher.views or ()) if watcher else (),
        min_workers=0,
        rules=WorkerRules(heartbeat_timeout_s=15, stall_s=60), data_loss_clear_s=60,
        replication=ReplicationRules(standbys=1, replay_lag_s=30, failover_clear_s=60),
    )
    last, clock = [facts[0]], Clock()

    def probe(timeout_s: float) -> PrimaryProbe:
        clock.at += timedelta(seconds=10)
        last[0] = facts.pop(0) if facts else last[0]
        return PrimaryProbe(None, 2.0, last[0])

    return Watchdog(
        watcher or FakeWatcher(), probe, book=AlertBook(threshold=2, remind_s=1800), submit=sent.append,
        limits=limits, health_path=str(tmp_path / "wd.health"), now=clock,
        probe_reader=(lambda timeout_s: reader.pop(0)) if reader is not None else None,
    )


def test_a_standby_gone_while_synchronous_is_one_down_then_one_recovered(tmp_path: Path) -> None:
    sent: list[Alert] = []
    watchdog = build_replicated([primary(SYNC), primary(), primary(), primary(), primary(SYNC)], tmp_path, sent)

    statuses = [{r.component: r.status for r in watchdog.run_cycle()} for _ in range(6)]

    assert statuses[0] == {"broker": Status.OK, "database": Status.OK, "replication": Status.OK,
                           "replication-lag": Status.OK, "failover": Status.OK, "broker-data-loss": Status.OK}
    assert statuses[1]["replication"] is Status.DOWN and statuses[1]["replication-lag"] is Status.UNKNOWN
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "replication"), ("RECOVERED", "replication")]
    assert "writes wait" in sent[0].detail


def test_workers_whose_commits_wait_for_the_missing_standby_are_not_alerted_on_top(tmp_path: Path) -> None:
    sent: list[Alert] = []
    waiting = heartbeat(at=NOW, commit_stalled=True, commit_wait_s=12.0, in_flight=50)
    watcher = FakeWatcher(views={"b1": WorkerView("b1", WorkerStatus.ONLINE, waiting, NOW + timedelta(seconds=15))})
    watchdog = build_replicated([primary()], tmp_path, sent, watcher=watcher)

    results = {r.component: r for r in [*watchdog.run_cycle(), *watchdog.run_cycle()]}

    assert results["b1"].status is Status.OK and "alerted as replication" in results["b1"].detail
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "replication")]


def test_a_failover_is_one_alert_at_once_and_recovers_after_the_clear_time(tmp_path: Path) -> None:
    sent: list[Alert] = []
    promoted = primary(SYNC, timeline=2, server="db2:5432")
    watchdog = build_replicated([primary(SYNC), primary(SYNC), promoted], tmp_path, sent)

    for _ in range(12):  # 120 s of 10 s cycles: the failover at 30 s, cleared 60 s later
        watchdog.run_cycle()

    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "failover"), ("RECOVERED", "failover")]
    assert sent[0].status is Status.DEGRADED
    assert sent[0].detail == "the primary changed: now db2:5432 (timeline 2), was db1:5432 (timeline 1)"
    assert sent[1].down_for_s == 70  # alerted at 30 s, DEGRADED until more than 60 s had passed


def test_a_standby_whose_replay_is_stuck_is_lagging_once_the_limit_passes(tmp_path: Path) -> None:
    sent: list[Alert] = []
    stuck = StandbyFacts("standby", "10.0.0.2", "streaming", "sync", 1000)
    # The primary writes on (its WAL position rises every cycle) while the standby stays at 1000.
    caught_up = StandbyFacts("standby", "10.0.0.2", "streaming", "sync", 1700)
    facts = [primary(stuck, lsn=1000 + 100 * n) for n in range(8)] + [primary(caught_up, lsn=1700)]
    watchdog = build_replicated(facts, tmp_path, sent)

    lags = [next(r for r in watchdog.run_cycle() if r.component == "replication-lag") for _ in range(10)]

    # WAL past 1000 first seen in the second cycle: 0, 0, 10, 20, 30 s behind, not over 30 s yet
    assert [lag.status for lag in lags[:5]] == [Status.OK] * 5
    assert lags[5].status is Status.DEGRADED and "has not replayed WAL the primary wrote 40 s ago" in lags[5].detail
    assert lags[9].status is Status.OK
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "replication-lag"),
                                                           ("RECOVERED", "replication-lag")]


def test_the_reader_is_a_component_of_its_own(tmp_path: Path) -> None:
    sent: list[Alert] = []
    answers = [ReaderProbe(None, 3.0, ReaderFacts("db2:5432", in_recovery=True)),
               ReaderProbe("cannot run SELECT pg_is_in_recovery(): connection refused"),
               ReaderProbe("cannot run SELECT pg_is_in_recovery(): connection refused"),
               ReaderProbe(None, 3.0, ReaderFacts("db1:5432", in_recovery=False))]
    watchdog = build_replicated([primary(SYNC)], tmp_path, sent, reader=answers)

    readers = [next(r for r in watchdog.run_cycle() if r.component == "database-reader") for _ in range(4)]

    assert [r.status for r in readers] == [Status.OK, Status.DOWN, Status.DOWN, Status.OK]
    assert readers[0].detail == "standby db2:5432 answers in 3 ms"
    assert "it is a primary: reads are not offloaded" in readers[3].detail
    assert [(a.kind.value, a.component) for a in sent] == [("DOWN", "database-reader"),
                                                           ("RECOVERED", "database-reader")]
    assert sent[0].detail.startswith("DATABASE_READ_URL: cannot run")
