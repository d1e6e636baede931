"""bridge.health: the health file a worker keeps fresh, and the check a container HEALTHCHECK runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fakes import T0

from bridge.health import check_alive, check_health
from bridge.stats import Stats
from iotcommon.health import write_health


def snapshot(*, at: datetime = T0, mqtt_connected: bool = True, db_ok: bool = True) -> dict[str, object]:
    stats = Stats(mqtt_connected=mqtt_connected, db_ok=db_ok, in_flight=3)
    return stats.heartbeat(client_id="w1", at=at).model_dump(mode="json")


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
        '{"at": "2024-05-01T12:00:00+00:00", "mqtt_connected": true}',
    ],
    ids=["empty", "not-json", "list", "number", "no-at", "at-number", "at-unparseable", "at-naive", "not-a-heartbeat"],
)
def test_corrupt_file_is_unhealthy(tmp_path: Path, content: str) -> None:
    path = tmp_path / "w1.health"
    path.write_text(content)

    healthy, message = check_health(str(path), now=T0, max_age_s=15)

    assert healthy is False
    assert message


def test_liveness_ignores_the_broker_connection_but_not_a_stuck_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, snapshot(mqtt_connected=False, db_ok=False))  # a broker and database outage

    assert check_alive(path, now=T0 + timedelta(seconds=15), max_age_s=15) == (True, "alive: heartbeat 15.0 s ago")
    alive, message = check_alive(path, now=T0 + timedelta(seconds=16), max_age_s=15)
    assert alive is False and "stuck or stopped" in message
    alive, message = check_alive(str(tmp_path / "missing"), now=T0, max_age_s=15)
    assert alive is False and "no usable health file" in message
