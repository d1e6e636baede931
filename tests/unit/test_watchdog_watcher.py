"""watchdog.watcher: the watchdog's MQTT connection, driven through paho's callbacks on a fake client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import heartbeat

from iotcommon.contract import LinkState, WorkerStatus
from watchdog.checks import WorkerView
from watchdog.watcher import BrokerWatcher

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
        self.on_subscribe(self, None, len(self.subscriptions), [SUCCESS] * 5, None)

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
        "bridge/status/+", "bridge/heartbeat/+", "$SYS/broker/publish/messages/dropped",
        "$SYS/broker/connection/+/state", "watchdog/probe/wd-1",
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
    beat = heartbeat(at=sent_at, in_flight=3)

    client.deliver("bridge/status/b1", "online", retain=True)
    client.deliver("bridge/status/b5", "crashed", retain=True)
    client.deliver("bridge/heartbeat/b1", beat.model_dump_json().encode(), retain=True)
    client.deliver("bridge/heartbeat/b2", beat.model_dump_json().encode(), retain=False)
    client.deliver("bridge/heartbeat/b3", b"", retain=False)
    client.deliver("$SYS/broker/publish/messages/dropped", b"17", retain=True)
    client.deliver("bridge/heartbeat/b4", b'{"at": "not a time"}', retain=False)
    client.deliver("bridge/heartbeat/b6", b'{"at": "not a time"}', retain=True)

    seen = watcher.observations()
    assert seen.views["b1"] == WorkerView("b1", WorkerStatus.ONLINE, beat, sent_at)
    assert seen.views["b5"].status is WorkerStatus.CRASHED
    assert seen.views["b2"].heartbeat_at == NOW, "a live heartbeat is as fresh as its arrival"
    assert seen.views["b3"].heartbeat is None and seen.views["b3"].heartbeat_at is None
    assert seen.views["b4"].malformed == "client_id: Field required"
    assert seen.views["b4"].heartbeat_at == NOW, "an unreadable live heartbeat still proves the worker speaks"
    assert seen.views["b6"].heartbeat_at is None, "an unreadable retained one is of unknown age"
    assert seen.dropped == 17


def test_a_bad_message_does_not_escape_the_callback(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    watcher = watcher_with(client)

    client.deliver("$SYS/broker/publish/messages/dropped", b"many")  # must not raise

    assert watcher.observations().dropped is None
    assert "could not record a message on $SYS/broker/publish/messages/dropped" in caplog.text


def test_site_links_are_recorded_with_when_they_changed_and_forgotten_on_resubscribe() -> None:
    clock = [NOW]
    client = FakeClient()
    watcher = BrokerWatcher(client, client_id="wd-1", broker="127.0.0.1:1883", now=lambda: clock[0])
    client.connect()

    client.deliver("$SYS/broker/connection/site-1/state", "1", retain=True)
    clock[0] = NOW + timedelta(seconds=5)
    client.deliver("$SYS/broker/connection/site-2/state", "0", retain=True)
    clock[0] = NOW + timedelta(seconds=9)
    client.deliver("$SYS/broker/connection/site-2/state", "0")  # the same state again: still down since 5 s
    links = watcher.observations().links

    assert {name: (view.state, view.since) for name, view in links.items()} == {
        "site-1": (LinkState.UP, NOW), "site-2": (LinkState.DOWN, NOW + timedelta(seconds=5)),
    }
    assert watcher.probe(1.0)[0] is None, "a link state is not taken for the probe's echo"
    client.deliver("$SYS/broker/connection/site-1/state", "")  # cleared
    assert set(watcher.observations().links) == {"site-2"}
    client.connect()  # a reconnect: the retained states come again, or are gone with a restarted broker
    assert watcher.observations().links == {}
