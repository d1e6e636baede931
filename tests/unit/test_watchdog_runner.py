"""watchdog.runner: check cycles with a fake watcher, fake probes and a fixed clock; the health file and table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes import heartbeat

from iotcommon.contract import WorkerStatus
from watchdog.checks import Status, WorkerRules, WorkerView
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
        watcher, lambda timeout_s: database.pop(0) if database else None,
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
