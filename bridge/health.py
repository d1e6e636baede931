"""The checks a container HEALTHCHECK or a liveness probe runs on a worker's health file."""

from __future__ import annotations

from datetime import datetime

from iotcommon.contract import Heartbeat
from iotcommon.health import read_fresh_health


def check_health(path: str, *, now: datetime, max_age_s: float) -> tuple[bool, str]:
    """(healthy, explanation): the worker wrote recently and is connected to the broker."""
    try:
        data, age_s = read_fresh_health(path, now=now, max_age_s=max_age_s, beat="heartbeat", who="worker")
    except ValueError as exc:
        return False, str(exc)
    try:
        beat = Heartbeat.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is one
        return False, f"unusable health file {path}: {' '.join(str(exc).split())[:200]}"
    if not beat.mqtt_connected:
        return False, "worker is not connected to the broker"
    database = "database ok" if beat.db_ok else "database UNAVAILABLE (retrying)"
    if beat.commit_stalled:
        database += f", COMMIT WAITING {beat.commit_wait_s:.1f} s (a synchronous standby away?)"
    return True, f"healthy: heartbeat {age_s:.1f} s ago, {database}, in flight {beat.in_flight}"


def check_alive(path: str, *, now: datetime, max_age_s: float) -> tuple[bool, str]:
    """(alive, explanation): the worker wrote its health file recently, connected or not.

    For a liveness probe, which restarts what fails it: a broker or database outage
    must not restart every worker (they reconnect by themselves), so only a stuck or
    stopped worker fails this. check_health, with the broker connection, is for readiness.
    """
    try:
        _, age_s = read_fresh_health(path, now=now, max_age_s=max_age_s, beat="heartbeat", who="worker")
    except ValueError as exc:
        return False, str(exc)
    return True, f"alive: heartbeat {age_s:.1f} s ago"
