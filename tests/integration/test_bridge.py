"""The bridge against real Mosquitto and PostgreSQL: exact rows, rejections, shutdown, start-up.

Faults (killed workers, stopped servers, bad links) are in tests/faults/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from devstack import traffic
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient, heartbeats_of
from devstack.postgres import PostgresServer
from devstack.processes import wait_until
from devstack.urls import login_password, with_login
from devstack.workers import StartWorker
from iotcommon.contract import WorkerStatus, heartbeat_topic, reading_topic, status_topic


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[MqttTestClient]:
    """A connected test client for publishing readings."""
    with MqttTestClient.from_url(mqtt_url) as client:
        yield client


def test_three_workers_store_exactly_the_unique_valid_readings(
    start: StartWorker, publisher: MqttTestClient, admin_database_url: str
) -> None:
    workers = [start(f"w{n}") for n in (1, 2, 3)]
    sent = traffic.build(10_000, duplicate_share=0.20, invalid_share=0.05)

    publisher.publish_many(sent.messages)
    traffic.wait_for_counts(admin_database_url, len(sent.expected), sent.invalid)

    for worker in workers:
        assert worker.terminate(15) == 0
    assert traffic.stored_rows(admin_database_url) == sent.expected
    assert traffic.counts(admin_database_url) == (7500, 500)
    beats = [worker.heartbeat() for worker in workers]  # each one's last, written after its drain
    assert sum(beat.received for beat in beats) == 10_000
    assert sum(beat.stored for beat in beats) == 7500
    assert sum(beat.duplicates for beat in beats) == 2000
    assert sum(beat.rejected for beat in beats) == 500
    assert sum(beat.conflicts for beat in beats) == 0
    assert all(beat.received > 0 for beat in beats), "the share group spread the load"


def test_a_worker_reads_its_passwords_from_files(
    start: StartWorker, publisher: MqttTestClient, mqtt_url: str, bridge_database_url: str,
    mosquitto_server: MosquittoServer | None, admin_database_url: str, tmp_path: Path,
) -> None:
    """The compose stack's way: URLs without passwords, each password in a file ending in a newline."""
    mqtt, database = urlsplit(mqtt_url), urlsplit(bridge_database_url)
    mqtt_password, database_password = unquote(mqtt.password or ""), unquote(database.password or "")
    assert set("@/%:") <= set(database_password), "login_password() lost the characters that break URLs"
    if mosquitto_server is not None:
        assert set("@/%:") <= set(mqtt_password), "TEST_MQTT_PASSWORD lost the characters that break URLs"
    (tmp_path / "mqtt").write_text(mqtt_password + "\n", encoding="utf-8")
    (tmp_path / "db").write_text(database_password + "\n", encoding="utf-8")

    worker = start(
        "pwfiles",
        mqtt_url=with_login(mqtt_url, unquote(mqtt.username or "")),
        mqtt_password_file=tmp_path / "mqtt",
        database_url=with_login(bridge_database_url, unquote(database.username or "")),
        database_password_file=tmp_path / "db",
    )
    topic, payload, row = traffic.reading(1)
    publisher.publish(topic, payload)
    traffic.wait_for_counts(admin_database_url, 1)

    assert traffic.stored_rows(admin_database_url) == {row}
    assert worker.terminate(10) == 0


def test_a_wrong_password_file_stops_the_worker_naming_the_database(
    start: StartWorker, bridge_database_url: str, postgres_server: PostgresServer | None, tmp_path: Path,
) -> None:
    # Only the test harness's own server checks passwords of login roles (scram-sha-256).
    if postgres_server is None:
        pytest.skip("an external TEST_DATABASE_URL may trust every connection")
    database = urlsplit(bridge_database_url)
    (tmp_path / "db").write_text(unquote(database.password or "") + "-wrong\n", encoding="utf-8")

    worker = start(
        "pwwrong", ready=False, bridge_startup_timeout_s=2, database_password_file=tmp_path / "db",
        database_url=with_login(bridge_database_url, unquote(database.username or "")),
    )

    assert worker.wait(30) == 1
    assert "password authentication failed" in worker.log_text()


def test_rejected_messages_keep_raw_bytes_reason_and_worker(
    start: StartWorker, publisher: MqttTestClient, admin_database_url: str
) -> None:
    worker = start("solo")
    bad = [traffic.invalid(n) for n in range(8)]
    publisher.publish_many(bad)
    traffic.wait_for_counts(admin_database_url, 0, len(bad))

    with psycopg.connect(admin_database_url) as conn:
        rows = conn.execute("SELECT topic, payload, reason, client_id FROM rejected_messages").fetchall()
    assert sorted((topic, bytes(payload)) for topic, payload, _, _ in rows) == sorted(bad)
    reasons = {bytes(payload): reason for _, payload, reason, _ in rows}
    assert "not valid JSON" in reasons[bad[0][1]]
    assert reasons[bad[1][1]].startswith("value:")
    assert reasons[bad[2][1]].startswith("timestamp:")
    assert reasons[bad[4][1]].startswith("unit: is required")
    assert "does not match the topic" in reasons[bad[5][1]]
    assert "UTF-8" in reasons[bad[6][1]]
    assert "empty array" in reasons[bad[7][1]]
    assert {client_id for *_, client_id in rows} == {worker.client_id}


def test_array_stores_valid_elements_and_rejects_each_bad_one_with_its_own_bytes(
    start: StartWorker, publisher: MqttTestClient, admin_database_url: str
) -> None:
    start("solo")
    good = [traffic.reading(i, sensors=1) for i in range(3)]
    bad_element = b'{"sensor_id": 1, "timestamp": "2026-01-01T00:00:00Z", "variable": "t", "value": true, "unit": "C"}'
    payload = b"[" + b", ".join([good[0][1], bad_element, good[1][1], good[2][1]]) + b"]"
    publisher.publish(reading_topic(1), payload)
    traffic.wait_for_counts(admin_database_url, 3, 1)

    assert traffic.stored_rows(admin_database_url) == {row for *_, row in good}
    with psycopg.connect(admin_database_url) as conn:
        stored_payload, reason = conn.execute("SELECT payload, reason FROM rejected_messages").fetchone()  # type: ignore[misc]
    assert bytes(stored_payload) == bad_element
    assert reason.startswith("element 1: value:")


def test_conflicting_duplicate_keeps_the_stored_row_and_records_the_newcomer(
    start: StartWorker, publisher: MqttTestClient, admin_database_url: str
) -> None:
    worker = start("solo")
    topic, original, row = traffic.reading(1)
    changed = json.dumps({**json.loads(original), "value": row[3] + 1000}).encode()
    assert changed != original
    publisher.publish(topic, original)
    traffic.wait_for_counts(admin_database_url, 1)
    publisher.publish_many([(topic, changed), (topic, original)])
    traffic.wait_for_counts(admin_database_url, 1, 1)

    assert worker.terminate(15) == 0
    assert traffic.stored_rows(admin_database_url) == {row}
    with psycopg.connect(admin_database_url) as conn:
        rejected = conn.execute("SELECT payload, reason FROM rejected_messages").fetchall()
    assert [bytes(payload) for payload, _ in rejected] == [changed]
    assert rejected[0][1].startswith("conflict:")
    assert "kept" in rejected[0][1]
    assert worker.heartbeat().conflicts == 1
    assert worker.heartbeat().duplicates == 1


def test_sigterm_drains_acks_and_exits_zero_within_grace(
    start: StartWorker, publisher: MqttTestClient, admin_database_url: str, mqtt_client: MqttTestClient,
) -> None:
    # A long flush interval keeps the readings in the worker's batch until SIGTERM.
    worker = start("drain", bridge_linger_ms=60_000, bridge_batch_size=1000, bridge_shutdown_grace_s=5)
    mqtt_client.subscribe(heartbeat_topic(worker.client_id))
    sent = traffic.build(300)
    publisher.publish_many(sent.messages)
    wait_until(
        lambda: any(beat.in_flight == 300 for beat in heartbeats_of(mqtt_client, {worker.client_id})),
        15, message="the worker holding 300 readings",
    )
    assert traffic.counts(admin_database_url) == (0, 0)

    assert worker.terminate(5) == 0
    assert traffic.stored_rows(admin_database_url) == sent.expected
    assert worker.heartbeat().stored == 300
    # Everything was acknowledged: a restarted worker with the same session gets nothing again.
    again = start("drain")
    assert again.client_id == worker.client_id
    assert again.terminate(10) == 0
    assert again.heartbeat().received == 0


def test_status_heartbeat_and_health_command(
    start: StartWorker, mqtt_client: MqttTestClient,
) -> None:
    worker = start("hb")
    mqtt_client.subscribe(heartbeat_topic(worker.client_id))
    # The first beat may predate the CONNACK; a later one must show a connected worker.
    # heartbeats_of parses each as the contract's Heartbeat: every counter the watchdog reads is there.
    beat = wait_until(
        lambda: next((b for b in heartbeats_of(mqtt_client, {worker.client_id}) if b.mqtt_connected), None),
        10, message="a heartbeat from the connected worker",
    )
    assert beat.client_id == worker.client_id
    assert beat.db_ok is True
    health = worker.run("health")
    assert health.returncode == 0, health.stdout + health.stderr
    assert "healthy" in health.stdout

    topic = status_topic(worker.client_id)
    mqtt_client.subscribe(topic)
    assert worker.terminate(10) == 0
    wait_until(
        lambda: [m.payload for m in mqtt_client.received(topic)][-1:] == [WorkerStatus.OFFLINE.encode()],
        10, message="offline status on a clean stop",
    )


def test_worker_killed_leaves_its_crashed_will(
    start: StartWorker, mqtt_client: MqttTestClient
) -> None:
    worker = start("will", bridge_keepalive_s=5)
    topic = status_topic(worker.client_id)
    mqtt_client.subscribe(topic)
    worker.kill()
    wait_until(
        lambda: [m.payload for m in mqtt_client.received(topic)][-1:] == [WorkerStatus.CRASHED.encode()],
        20, message="Last Will 'crashed' published by the broker",
    )


def test_unreachable_database_at_start_is_an_outage_the_worker_waits_out(
    start: StartWorker, mqtt_client: MqttTestClient,
) -> None:
    worker = start("nodb", database_url="postgresql://bridge:secret-pw@127.0.0.1:1/nowhere")
    mqtt_client.subscribe(heartbeat_topic(worker.client_id))
    wait_until(lambda: len(heartbeats_of(mqtt_client, {worker.client_id})) >= 3, 10,
               message="three heartbeats from the worker waiting for its database")
    beat = heartbeats_of(mqtt_client, {worker.client_id})[-1]
    health = worker.run("health")

    assert worker.is_running()
    assert beat.db_ok is False and beat.mqtt_connected is True
    assert health.returncode == 0 and "database UNAVAILABLE" in health.stdout, health.stdout
    assert worker.terminate(10) == 0, "SIGTERM stops a worker that waits for its database"
    log = worker.log_text()
    assert "database unavailable at start" in log and "127.0.0.1:1/nowhere" in log
    assert "secret-pw" not in log


MISCONFIGURED = {
    # case: (role, password, database, what the message must say)
    "unknown database": ("bridge_test", login_password("bridge_test"), "nosuchdb", "create that database"),
    # Asked for a password, PostgreSQL does not say whether the role exists.
    "unknown role": ("nosuch_role", "secret-pw", "postgres", "check the user and password"),
    "wrong password": ("pw_check_test", "wrong-secret-pw", "postgres", "check the user and password"),
    "schema.sql not applied": ("bridge_test", login_password("bridge_test"), "noschema", "apply schema.sql"),
    "role without grants": ("nogrants_test", "nogrants-secret-pw", "postgres", "grant it iot_bridge"),
}


@pytest.fixture(scope="module")
def misconfigured_database(admin_database_url: str, postgres_server: PostgresServer | None) -> str:
    """The test server with the pieces each MISCONFIGURED case lacks; skips on other backends."""
    if postgres_server is None:
        pytest.skip("only the throwaway server is known to check passwords; TEST_DATABASE_URL may trust everyone")
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'noschema'").fetchone():
            conn.execute("CREATE DATABASE noschema")
        for role, password in (("pw_check_test", "right-secret-pw"), ("nogrants_test", "nogrants-secret-pw")):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            if role == "pw_check_test":
                conn.execute(f"GRANT iot_bridge TO {role}")
    return admin_database_url


@pytest.mark.parametrize("case", MISCONFIGURED)
def test_what_no_waiting_fixes_stops_the_worker_at_once_naming_the_fix(
    start: StartWorker, misconfigured_database: str, case: str,
) -> None:
    role, password, dbname, fix = MISCONFIGURED[case]
    worker = start(case.replace(" ", "-").replace(".", ""), ready=False,
                   database_url=with_login(misconfigured_database, role, password, dbname=dbname))

    assert worker.wait(30) == 1
    log = worker.log_text()
    assert "cannot start" in log and fix in log, log
    assert password not in log


def test_bad_setting_exits_2_naming_the_variable(start: StartWorker) -> None:
    worker = start("badcfg", ready=False, bridge_batch_size="lots")
    assert worker.wait(30) == 2
    assert "BRIDGE_BATCH_SIZE" in worker.log_text()
