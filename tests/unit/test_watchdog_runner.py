"""The MQTT watcher with a fake paho client, and check cycles with fake probes and a fixed clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from watchdog.checks import Status, WorkerRules, WorkerView
from watchdog.runner import Limits, Watchdog, check_health, status_table
from watchdog.state import Alert, AlertBook
from watchdog.watcher import BrokerWatcher, Observations

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
SUCCESS = SimpleNamespace(is_failure=False)


class FakeClient:
    """Records subscriptions and publishes; `echo` decides whether the 'broker' delivers probes back."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.subscriptions: list[list[tuple[str, int]]] = []
        self.published: list[tuple[str, Any, int]] = []
        self.on_connect: Any = None
        self.on_subscribe: Any = None
        self.on_message: Any = None
        self.on_disconnect: Any = None

    def subscribe(self, topics: list[tuple[str, int]]) -> tuple[int, int]:
        self.subscriptions.append(topics)
        return 0, len(self.subscriptions)

    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos))
        if self.echo:
            self.deliver(topic, payload)

    def connect(self) -> None:
        self.on_connect(self, None, SimpleNamespace(session_present=False), SUCCESS, None)
        self.on_subscribe(self, None, len(self.subscriptions), [SUCCESS] * 4, None)

    def deliver(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.on_message(self, None, SimpleNamespace(topic=topic, payload=data, retain=retain))


def watcher_with(client: FakeClient, now: datetime = NOW) -> BrokerWatcher:
    return BrokerWatcher(client, client_id="wd-1", broker="127.0.0.1:1883", now=lambda: now)


def test_subscribes_on_every_connect() -> None:
    client = FakeClient()
    watcher = watcher_with(client)

    client.connect()
    client.on_disconnect(client, None, None, "gone", None)
    assert watcher.observations().listening_since is None
    client.connect()

    assert len(client.subscriptions) == 2
    assert [topic for topic, _ in client.subscriptions[0]] == [
        "bridge/status/+", "bridge/heartbeat/+", "$SYS/broker/publish/messages/dropped", "watchdog/probe/wd-1"
    ]
    assert watcher.observations().listening_since == NOW


def test_probe_round_trip_and_its_failures() -> None:
    client = FakeClient()
    watcher = watcher_with(client)

    error, _ = watcher.probe(0.05)
    assert error is not None and "cannot use the broker at 127.0.0.1:1883: not connected yet" in error

    client.connect()
    assert watcher.probe(1.0)[0] is None
    assert client.published[-1][0] == "watchdog/probe/wd-1" and client.published[-1][2] == 1

    client.echo = False
    error, _ = watcher.probe(0.05)
    assert error is not None and "did not deliver the probe" in error


def test_no_retained_dropped_counter_after_a_probe_means_zero_and_reconnects_forget_it() -> None:
    client = FakeClient()
    watcher = watcher_with(client)
    client.connect()
    assert watcher.observations().dropped is None

    assert watcher.probe(1.0)[0] is None
    assert watcher.observations().dropped == 0, "a restarted Mosquitto publishes the counter only once it changes"

    client.deliver("$SYS/broker/publish/messages/dropped", b"45", retain=True)
    client.connect()
    assert watcher.observations().dropped is None, "a new connection (maybe a new broker) brings its own value"


def test_records_status_heartbeats_and_dropped_counter() -> None:
    client = FakeClient()
    watcher = watcher_with(client)
    client.connect()
    sent_at = NOW - timedelta(seconds=40)
    beat = json.dumps({"at": sent_at.isoformat(), "in_flight": 3}).encode()

    client.deliver("bridge/status/b1", "online", retain=True)
    client.deliver("bridge/heartbeat/b1", beat, retain=True)
    client.deliver("bridge/heartbeat/b2", beat, retain=False)
    client.deliver("bridge/heartbeat/b3", b"", retain=False)
    client.deliver("$SYS/broker/publish/messages/dropped", b"17", retain=True)
    client.deliver("bridge/heartbeat/b4", b"not json", retain=False)

    seen = watcher.observations()
    assert seen.views["b1"] == WorkerView("b1", "online", {"at": sent_at.isoformat(), "in_flight": 3}, sent_at)
    assert seen.views["b2"].heartbeat_at == NOW, "a live heartbeat is as fresh as its arrival"
    assert seen.views["b3"].heartbeat is None and seen.views["b3"].heartbeat_at is None
    assert seen.views["b4"].heartbeat_at is None
    assert seen.dropped == 17


def test_a_bad_message_does_not_escape_the_callback(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    watcher = watcher_with(client)

    client.deliver("$SYS/broker/publish/messages/dropped", b"many")  # must not raise

    assert watcher.observations().dropped is None
    assert "could not record a message on $SYS/broker/publish/messages/dropped" in caplog.text


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
    alive = WorkerView("b1", "online", {"in_flight": 0, "db_ok": True}, NOW - timedelta(seconds=2))
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
