"""`python -m bridge replay-rejected` against a real PostgreSQL, after a real worker rejected messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from fix_replication import replay_url_of
from psycopg.errors import InsufficientPrivilege

from devstack import traffic
from devstack.mqtt_client import MqttTestClient
from devstack.processes import REPO_ROOT, wait_until
from devstack.replication import ReplicatedPostgres
from devstack.workers import StartWorker
from iotcommon.contract import READINGS_FILTER, reading_topic

TOPIC = reading_topic(7)
REPLAY_TIMEOUT_S = 60
DONE = "replay-rejected: "


def replay(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run replay-rejected as an operator would, with only these bridge settings."""
    environ = {
        key: value for key, value in os.environ.items()
        if not key.startswith("BRIDGE_") and key not in ("DATABASE_URL", "MQTT_URL")
    }
    environ.update({"DATABASE_URL": database_url, **env})
    return subprocess.run(
        [sys.executable, "-m", "bridge", "replay-rejected", *args],
        cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S, check=False,
    )


def table(admin_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin_url) as conn:
        return conn.execute(query).fetchall()


def replays(admin_url: str) -> list[tuple[Any, ...]]:
    return table(admin_url, "SELECT rejected_id, outcome, readings_stored FROM rejected_replays ORDER BY id")


def summary_of(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_replay_stores_what_a_larger_max_future_allows_once_and_keeps_the_evidence(
    start: StartWorker, mqtt_client: MqttTestClient, admin_database_url: str, replay_database_url: str
) -> None:
    start("strict", bridge_max_future_s=0)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    future = {"sensor_id": 7, "timestamp": at.isoformat(), "variable": "temperature", "value": 21.5, "unit": "C"}
    mqtt_client.publish_many([(TOPIC, json.dumps(future).encode()), (TOPIC, b"not json")])
    wait_until(lambda: traffic.counts(admin_database_url) == (0, 2), 30, interval=0.1, message="2 rejected")
    evidence_query = "SELECT id, received_at, topic, payload, reason, client_id, stored_at FROM rejected_messages"
    evidence = table(admin_database_url, evidence_query + " ORDER BY id")
    future_id = next(row[0] for row in evidence if bytes(row[3]) != b"not json")
    assert next(row[4] for row in evidence if row[0] == future_id).startswith("timestamp:")

    dry = replay(replay_database_url, "--dry-run", BRIDGE_MAX_FUTURE_S="3600")
    assert summary_of(dry) == (
        "replay-rejected (dry run, nothing written): "
        "examined=2 now_valid=1 stored=0 duplicates=0 still_invalid=1 skipped=0"
    )
    assert f"#{future_id} would be stored" in dry.stdout
    assert traffic.counts(admin_database_url) == (0, 2) and replays(admin_database_url) == []

    first = replay(replay_database_url, BRIDGE_MAX_FUTURE_S="3600")
    assert summary_of(first) == f"{DONE}examined=2 now_valid=1 stored=1 duplicates=0 still_invalid=1 skipped=0"
    assert traffic.stored_rows(admin_database_url) == {(7, at, "temperature", 21.5, "C")}
    records = replays(admin_database_url)
    assert sorted(records) == sorted([(future_id, "stored", 1), (3 - future_id, "still invalid", 0)])

    second = replay(replay_database_url, BRIDGE_MAX_FUTURE_S="3600")
    assert summary_of(second) == f"{DONE}examined=0 now_valid=0 stored=0 duplicates=0 still_invalid=0 skipped=2"
    assert replays(admin_database_url) == records
    assert traffic.counts(admin_database_url) == (1, 2)

    again = replay(replay_database_url, "--again", "--reason", "timestamp", BRIDGE_MAX_FUTURE_S="3600")
    assert summary_of(again) == f"{DONE}examined=1 now_valid=1 stored=0 duplicates=1 still_invalid=0 skipped=0"
    assert replays(admin_database_url) == [*records, (future_id, "duplicate", 0)]
    assert traffic.stored_rows(admin_database_url) == {(7, at, "temperature", 21.5, "C")}

    assert table(admin_database_url, evidence_query + " ORDER BY id") == evidence, "the evidence is unchanged"


def test_replay_under_the_old_limit_records_still_invalid_with_the_current_reason(
    start: StartWorker, mqtt_client: MqttTestClient, admin_database_url: str, replay_database_url: str
) -> None:
    start("strict", bridge_max_future_s=0)
    at = datetime.now(UTC) + timedelta(minutes=10)
    payload = {"sensor_id": 7, "timestamp": at.isoformat(), "variable": "t", "value": 1.0, "unit": "C"}
    mqtt_client.publish(TOPIC, json.dumps(payload).encode())
    wait_until(lambda: traffic.counts(admin_database_url) == (0, 1), 30, interval=0.1, message="1 rejected")

    result = replay(replay_database_url, "--topic", READINGS_FILTER, BRIDGE_MAX_FUTURE_S="60")

    assert "still_invalid=1" in summary_of(result)
    [(outcome, detail)] = table(admin_database_url, "SELECT outcome, detail FROM rejected_replays")
    assert outcome == "still invalid" and detail.startswith("timestamp:")
    assert traffic.counts(admin_database_url) == (0, 1)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE rejected_messages SET reason = ''",
        "DELETE FROM rejected_messages",
        "TRUNCATE rejected_messages",
        "UPDATE rejected_replays SET outcome = 'stored'",
        "DELETE FROM rejected_replays",
        "UPDATE readings SET value = 0",
        "DELETE FROM readings",
        "SELECT client_id FROM rejected_messages",
    ],
)
@pytest.mark.parametrize("role", ["bridge", "replay"])
def test_neither_role_can_change_the_evidence(
    bridge_database_url: str, replay_database_url: str, role: str, statement: str
) -> None:
    url = bridge_database_url if role == "bridge" else replay_database_url
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(InsufficientPrivilege):
        conn.execute(statement)


def test_database_error_exits_1_naming_the_host_without_the_password(replay_database_url: str) -> None:
    parts = urlsplit(replay_database_url)
    # The test cluster may trust local connections, so a role that does not exist makes the error.
    wrong = urlunsplit(parts._replace(netloc=f"no_such_role:wrong-s3cr3t@{parts.hostname}:{parts.port}"))

    result = replay(wrong)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"database error at {parts.hostname}:{parts.port}" in result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "wrong-s3cr3t" not in result.stdout + result.stderr


def test_configuration_error_exits_2(replay_database_url: str) -> None:
    result = replay(replay_database_url, BRIDGE_MAX_FUTURE_S="-1")

    assert result.returncode == 2
    assert "BRIDGE_MAX_FUTURE_S" in result.stderr


def _dead_letter(admin_url: str, sensor_id: int) -> int:
    """A rejected message that today's rules accept (its timestamp is no longer in the future)."""
    payload = {"sensor_id": sensor_id, "timestamp": "2026-01-01T00:00:00+00:00", "variable": "t", "value": 1.5,
               "unit": "C"}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO rejected_messages (received_at, topic, payload, reason, reason_code, client_id)"
            " VALUES (now(), %s, %s, 'timestamp: in the future', 'future_timestamp', 'w1') RETURNING id",
            (reading_topic(sensor_id), json.dumps(payload).encode()),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_replay_with_a_multi_host_url_stops_on_an_unconfirmed_commit_and_follows_a_failover(
    replicated_postgres: ReplicatedPostgres,
) -> None:
    pair = replicated_postgres
    url = replay_url_of(pair)  # both servers, target_session_attrs=read-write
    first, second = _dead_letter(pair.primary.url(), 1), _dead_letter(pair.primary.url(), 2)
    pair.standby.stop()  # COMMITs wait for it
    environ = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    running = subprocess.Popen(
        [sys.executable, "-m", "bridge", "replay-rejected", "--limit", "1"], cwd=REPO_ROOT,
        env={**environ, "DATABASE_URL": url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with psycopg.connect(pair.primary.url(), autocommit=True) as admin:
            query = ("SELECT pid FROM pg_stat_activity"
                     " WHERE application_name = 'bridge-replay' AND wait_event = 'SyncRep'")
            (pid,) = wait_until(lambda: admin.execute(query).fetchone(), 30, message="replay's COMMIT waiting")
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))  # an operator's Ctrl-C, a pooler: not the tool
        stdout, stderr = running.communicate(timeout=REPLAY_TIMEOUT_S)
    finally:
        running.kill()
    assert running.returncode == 1, stdout + stderr
    assert f"the replay of rejected message #{first} committed on the primary, but the synchronous standby " \
           "did not confirm it" in stderr

    pair.standby.start()
    pair.wait_replayed()  # the unconfirmed replay reaches the standby once it is back
    pair.kill_primary()
    pair.promote()
    after = replay(url)

    assert summary_of(after) == f"{DONE}examined=1 now_valid=1 stored=1 duplicates=0 still_invalid=0 skipped=1"
    assert f"#{first} skipped: already replayed" in after.stdout and f"#{second} stored" in after.stdout
    assert {row[0] for row in traffic.stored_rows(pair.standby.url())} == {1, 2}
