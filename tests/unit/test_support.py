"""The small parts: backoff, inbox, health file, heartbeat, counters."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.backoff import Backoff
from bridge.errors import BridgeError, ConfigError, InvalidMessage, SinkError, SinkRefused, SinkUnavailable
from bridge.health import check_alive, check_health, write_health
from bridge.heartbeat import Heartbeat, heartbeat_topic
from bridge.inbox import Delivery, Inbox
from bridge.model import Parsed
from bridge.stats import Stats

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def delivery(mid: int, generation: int = 1) -> Delivery:
    return Delivery(mid, 1, generation, "sensors/5/readings", b"{}", T0, Parsed())


# --- Backoff ----------------------------------------------------------------------------------


def test_backoff_doubles_until_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, jitter=0.2, rand=lambda: 0.0)

    delays = [backoff.next_delay() for _ in range(7)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff.attempts == 7


def test_backoff_factor_is_configurable() -> None:
    backoff = Backoff(initial_s=1.0, max_s=100.0, factor=3.0, jitter=0.0)

    assert [backoff.next_delay() for _ in range(4)] == pytest.approx([1.0, 3.0, 9.0, 27.0])


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 0.4), (0.5, 0.36), (0.999999, 0.32)])
def test_backoff_jitter_shortens_by_at_most_the_jitter_fraction(rand: float, expected: float) -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0, jitter=0.2, rand=lambda: rand)
    backoff.next_delay()
    backoff.next_delay()

    assert backoff.next_delay() == pytest.approx(expected, rel=1e-5)


def test_backoff_with_real_randomness_stays_within_bounds() -> None:
    backoff = Backoff(initial_s=0.5, max_s=2.0, jitter=0.25)

    for nominal in [0.5, 1.0, 2.0, 2.0, 2.0]:
        assert 0.75 * nominal <= backoff.next_delay() <= nominal


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.1)
    assert backoff.next_delay() == pytest.approx(0.2)


# --- Inbox ------------------------------------------------------------------------------------


def test_inbox_is_first_in_first_out() -> None:
    inbox = Inbox()
    for mid in range(5):
        inbox.put(delivery(mid))

    assert len(inbox) == 5
    assert [d.mid for d in inbox.take(3, 0.0)] == [0, 1, 2]
    assert [d.mid for d in inbox.take(10, 0.0)] == [3, 4]
    assert len(inbox) == 0


def test_inbox_take_zero_items_takes_nothing() -> None:
    inbox = Inbox()
    inbox.put(delivery(1))

    assert inbox.take(0, 0.0) == []
    assert len(inbox) == 1


def test_inbox_take_on_empty_inbox_times_out_empty() -> None:
    assert Inbox().take(10, 0.0) == []


def test_inbox_take_wakes_when_a_delivery_arrives() -> None:
    inbox = Inbox()
    producer = threading.Thread(target=inbox.put, args=(delivery(9),))

    producer.start()
    taken = inbox.take(10, 30.0)  # returns as soon as the put lands, long before the timeout
    producer.join()

    assert [d.mid for d in taken] == [9]


def test_inbox_wake_ends_a_waiting_take_early() -> None:
    inbox = Inbox()
    results: list[list[Delivery]] = []
    taker = threading.Thread(target=lambda: results.append(inbox.take(10, 30.0)))
    taker.start()

    deadline = time.monotonic() + 5.0
    while taker.is_alive() and time.monotonic() < deadline:
        inbox.wake()  # repeated: the first call may come before take() waits
        taker.join(0.01)

    assert not taker.is_alive(), "wake() did not end take()"
    assert results == [[]]


# --- health file ------------------------------------------------------------------------------


def snapshot(*, at: datetime = T0, mqtt_connected: bool = True, db_ok: bool = True) -> dict[str, object]:
    return {"client_id": "w1", "at": at.isoformat(), "mqtt_connected": mqtt_connected, "db_ok": db_ok, "in_flight": 3}


def test_fresh_and_connected_is_healthy(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot())

    healthy, message = check_health(path, now=T0 + timedelta(seconds=4), max_age_s=15)

    assert healthy is True
    assert "healthy" in message
    assert "database ok" in message


def test_database_down_is_still_healthy_but_said(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot(db_ok=False))

    healthy, message = check_health(path, now=T0, max_age_s=15)

    assert healthy is True  # the worker is retrying by itself; restarting it would not help
    assert "UNAVAILABLE" in message


def test_stale_file_is_unhealthy(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot())

    assert check_health(path, now=T0 + timedelta(seconds=15), max_age_s=15)[0] is True
    healthy, message = check_health(path, now=T0 + timedelta(seconds=16), max_age_s=15)

    assert healthy is False
    assert "16 s ago" in message


def test_not_connected_is_unhealthy(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot(mqtt_connected=False))

    healthy, message = check_health(path, now=T0, max_age_s=15)

    assert healthy is False
    assert "not connected" in message


def test_liveness_ignores_the_broker_connection_but_not_a_stuck_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot(mqtt_connected=False, db_ok=False))  # a broker and database outage

    assert check_alive(path, now=T0 + timedelta(seconds=15), max_age_s=15) == (True, "alive: heartbeat 15.0 s ago")
    alive, message = check_alive(path, now=T0 + timedelta(seconds=16), max_age_s=15)
    assert alive is False and "stuck or stopped" in message
    alive, message = check_alive(str(tmp_path / "missing"), now=T0, max_age_s=15)
    assert alive is False and "no usable health file" in message


@pytest.mark.parametrize(("argv", "exit_code"), [(["health"], 1), (["health", "--live"], 0)])
def test_the_health_command_live_option_skips_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    exit_code: int,
) -> None:
    from bridge.__main__ import main

    path = tmp_path / "w1.health"
    write_health(str(path), snapshot(at=datetime.now(UTC), mqtt_connected=False))
    monkeypatch.setenv("BRIDGE_HEALTH_FILE", str(path))

    assert main(argv) == exit_code
    assert ("alive" if exit_code == 0 else "not connected") in capsys.readouterr().out


def test_missing_file_is_unhealthy(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.health")

    healthy, message = check_health(path, now=T0, max_age_s=15)

    assert healthy is False
    assert path in message


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        "42",
        '{"mqtt_connected": true}',
        '{"at": 1714564800, "mqtt_connected": true}',
        '{"at": "yesterday", "mqtt_connected": true}',
        '{"at": "2024-05-01T12:00:00", "mqtt_connected": true}',
    ],
    ids=["empty", "not-json", "list", "number", "no-at", "at-number", "at-unparseable", "at-naive"],
)
def test_corrupt_file_is_unhealthy(tmp_path: Path, content: str) -> None:
    path = tmp_path / "w1.health"
    path.write_text(content)

    healthy, message = check_health(str(path), now=T0, max_age_s=15)

    assert healthy is False
    assert message


def test_write_health_replaces_the_file_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "w1.health"
    write_health(str(path), snapshot(at=T0))
    write_health(str(path), snapshot(at=T0 + timedelta(seconds=5)))

    assert json.loads(path.read_text())["at"] == (T0 + timedelta(seconds=5)).isoformat()
    assert [p.name for p in tmp_path.iterdir()] == ["w1.health"]


# --- Heartbeat --------------------------------------------------------------------------------


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[tuple[str, str]] = []
        self.error = error

    def __call__(self, topic: str, payload: str) -> None:
        self.published.append((topic, payload))
        if self.error:
            raise self.error


def heartbeat(tmp_path: Path, publish: Recorder, stats: Stats | None = None) -> Heartbeat:
    return Heartbeat(
        publish,
        stats or Stats(),
        client_id="w1",
        interval_s=5.0,
        health_path=str(tmp_path / "w1.health"),
        now=lambda: T0,
    )


def test_beat_publishes_counters_and_writes_the_health_file(tmp_path: Path) -> None:
    stats = Stats(received=10, stored=7, duplicates=1, rejected=2, in_flight=3, mqtt_connected=True)
    stats.last_commit_at = T0 - timedelta(seconds=1)
    publish = Recorder()

    returned = heartbeat(tmp_path, publish, stats).beat()

    ((topic, payload),) = publish.published
    assert topic == "bridge/heartbeat/w1" == heartbeat_topic("w1")
    body = json.loads(payload)
    assert body == returned
    assert body["client_id"] == "w1"
    assert body["at"] == T0.isoformat()
    assert {k: body[k] for k in ("received", "stored", "duplicates", "rejected", "in_flight")} == {
        "received": 10, "stored": 7, "duplicates": 1, "rejected": 2, "in_flight": 3,
    }
    assert body["last_commit_at"] == (T0 - timedelta(seconds=1)).isoformat()
    assert body["db_ok"] is True
    assert json.loads((tmp_path / "w1.health").read_text()) == body
    assert check_health(str(tmp_path / "w1.health"), now=T0, max_age_s=15)[0] is True


def test_beat_survives_a_failing_publish(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publish = Recorder(error=ValueError("payload too large"))

    with caplog.at_level(logging.ERROR, logger="bridge.heartbeat"):
        snapshot = heartbeat(tmp_path, publish).beat()

    assert snapshot["client_id"] == "w1"
    assert len(publish.published) == 1
    assert "could not publish heartbeat of w1" in caplog.text


class CountdownEvent(threading.Event):
    """A stop event whose wait() returns True (stop) on the n-th call, without waiting."""

    def __init__(self, calls_until_set: int) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.calls_until_set = calls_until_set

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return len(self.waits) >= self.calls_until_set


def test_run_beats_every_interval_until_stopped(tmp_path: Path) -> None:
    publish = Recorder()
    stop = CountdownEvent(calls_until_set=3)

    heartbeat(tmp_path, publish).run(stop)

    assert len(publish.published) == 3
    assert stop.waits == [5.0, 5.0, 5.0]


def test_run_beats_once_then_stops_when_stop_is_set(tmp_path: Path) -> None:
    publish = Recorder()
    stop = threading.Event()
    stop.set()

    heartbeat(tmp_path, publish).run(stop)

    assert len(publish.published) == 1


# --- errors ---------------------------------------------------------------------------------


def test_errors_share_one_root_and_keep_their_data() -> None:
    config = ConfigError("BRIDGE_BATCH_SIZE", "must be at least 1")
    invalid = InvalidMessage("value: must be finite")

    assert str(config) == "BRIDGE_BATCH_SIZE: must be at least 1"
    assert (config.variable, config.problem) == ("BRIDGE_BATCH_SIZE", "must be at least 1")
    assert invalid.reason == str(invalid) == "value: must be finite"
    for error in (config, invalid, SinkUnavailable("down"), SinkRefused("bad data")):
        assert isinstance(error, BridgeError)
    assert issubclass(SinkUnavailable, SinkError)
    assert issubclass(SinkRefused, SinkError)


# --- Stats ------------------------------------------------------------------------------------


def test_summary_names_every_counter() -> None:
    stats = Stats(received=10, stored=6, duplicates=2, conflicts=1, rejected=1, in_flight=4)

    summary = stats.summary()

    for part in ("received=10", "stored=6", "duplicates=2", "conflicts=1", "rejected=1", "in_flight=4"):
        assert part in summary


def test_snapshot_is_json_ready() -> None:
    stats = Stats(received=1, last_commit_at=T0)

    data = json.loads(json.dumps(Stats().snapshot())), json.loads(json.dumps(stats.snapshot()))

    assert data[0]["last_commit_at"] is None
    assert data[1]["last_commit_at"] == T0.isoformat()
    assert data[1]["received"] == 1
    assert set(data[1]) >= {"received", "stored", "duplicates", "rejected", "in_flight", "db_ok", "mqtt_connected"}
