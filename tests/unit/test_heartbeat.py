"""bridge.heartbeat: the contract's heartbeat published every interval, and the same JSON in the health file."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fakes import T0

from bridge.health import check_health
from bridge.heartbeat import Heartbeat
from bridge.stats import Stats
from iotcommon.contract import heartbeat_topic, parse_heartbeat


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
    assert parse_heartbeat(payload.encode()) == returned, "what the watchdog reads is what was sent"
    assert body["client_id"] == "w1"
    assert datetime.fromisoformat(body["at"]) == T0
    assert {k: body[k] for k in ("received", "stored", "duplicates", "rejected", "in_flight")} == {
        "received": 10, "stored": 7, "duplicates": 1, "rejected": 2, "in_flight": 3,
    }
    assert datetime.fromisoformat(body["last_commit_at"]) == T0 - timedelta(seconds=1)
    assert body["db_ok"] is True
    assert json.loads((tmp_path / "w1.health").read_text()) == body
    assert check_health(str(tmp_path / "w1.health"), now=T0, max_age_s=15)[0] is True


def test_beat_survives_a_failing_publish(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publish = Recorder(error=ValueError("payload too large"))

    with caplog.at_level(logging.ERROR, logger="bridge.heartbeat"):
        sent = heartbeat(tmp_path, publish).beat()

    assert sent.client_id == "w1"
    assert len(publish.published) == 1
    assert "could not publish heartbeat of w1" in caplog.text


def test_a_beat_begun_before_the_last_one_cannot_overwrite_it(tmp_path: Path) -> None:
    """At shutdown the last beat (after the drain) races the heartbeat thread's: the last one's counters stay."""
    stats = Stats(received=1)
    publishing, release = threading.Event(), threading.Event()

    def publish(topic: str, payload: str) -> None:
        if not publishing.is_set():  # the thread's beat, with the counters before the drain
            publishing.set()
            release.wait(10)

    beat = Heartbeat(publish, stats, client_id="w1", interval_s=5.0, health_path=str(tmp_path / "w1.health"),
                     now=lambda: T0)
    early = threading.Thread(target=beat.beat)
    early.start()
    assert publishing.wait(10)
    stats.received = 2  # the drain ends
    last = threading.Thread(target=beat.beat)
    last.start()
    last.join(0.2)
    waited = last.is_alive()
    release.set()
    early.join(10)
    last.join(10)

    assert waited, "the last beat waits for the one in progress"
    beat_in_file = parse_heartbeat((tmp_path / "w1.health").read_bytes())
    assert beat_in_file is not None and beat_in_file.received == 2


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


def test_a_commit_waiting_past_the_limit_shows_in_the_heartbeat_health_and_log_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The writer is blocked in COMMIT (a synchronous standby away): the heartbeat thread must say so."""
    stats = Stats(mqtt_connected=True)
    clock = [T0]
    beat = Heartbeat(Recorder(), stats, client_id="w1", interval_s=1.0, health_path=str(tmp_path / "w1.health"),
                     now=lambda: clock[0], commit_wait_warn_s=5.0)
    stats.commit_started(T0)

    with caplog.at_level(logging.WARNING, logger="bridge.heartbeat"):
        early = beat.beat()
        clock[0] = T0 + timedelta(seconds=6)
        late = beat.beat()
        clock[0] = T0 + timedelta(seconds=7)
        beat.beat()
    healthy, message = check_health(str(tmp_path / "w1.health"), now=clock[0], max_age_s=3)
    stats.commit_ended()
    after = beat.beat()

    assert (early.commit_wait_s, early.commit_stalled) == (0.0, False)
    assert (late.commit_wait_s, late.commit_stalled) == (6.0, True)
    assert (after.commit_wait_s, after.commit_stalled) == (0.0, False)
    assert healthy and "COMMIT WAITING 7.0 s" in message, "still healthy: waiting for a standby is no crash"
    assert caplog.text.count("COMMIT has waited") == 1, "said once per wait"
