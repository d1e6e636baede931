"""Tests of the test harness itself: the servers the fixtures start behave as the bridge needs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.errors import InsufficientPrivilege

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import PostgresServer

INSERT_READING = (
    'INSERT INTO readings (sensor_id, "timestamp", variable, value, unit)'
    " VALUES (%s, %s, 'temperature', 21.5, 'degC')"
)


def test_postgres_accepts_connections_and_has_the_schema(admin_database_url: str) -> None:
    with psycopg.connect(admin_database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' ORDER BY table_name"
        ).fetchall()

    assert [name for (name,) in rows] == [
        "bridge_progress", "reading_revisions", "readings", "rejected_messages", "rejected_replays",
    ]


def test_bridge_role_can_insert_readings_and_dead_letters(bridge_database_url: str) -> None:
    with psycopg.connect(bridge_database_url) as conn:
        conn.execute(INSERT_READING, (1, datetime.now(UTC)))
        conn.execute(
            "INSERT INTO rejected_messages (received_at, topic, payload, reason, client_id)"
            " VALUES (now(), 'sensors/1', %s, 'test', 'w1')",
            (b"\xff",),
        )
        (count,) = conn.execute("SELECT count(*) FROM readings").fetchone() or (0,)

    assert count == 1


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM readings",
        "UPDATE readings SET value = 0",
        "TRUNCATE readings",
        "DROP TABLE readings",
        "ALTER TABLE readings ADD COLUMN note text",
        "DELETE FROM rejected_messages",
        "UPDATE rejected_messages SET reason = ''",
        "TRUNCATE rejected_messages",
        "DROP TABLE rejected_messages",
        "SELECT payload FROM rejected_messages",
        "SELECT * FROM rejected_replays",
        "INSERT INTO rejected_replays (rejected_id, outcome, detail) VALUES (1, 'stored', '')",
        "UPDATE rejected_replays SET outcome = 'stored'",
        "DELETE FROM rejected_replays",
        "TRUNCATE rejected_replays",
        "SELECT ingested_at FROM readings",
        "DELETE FROM bridge_progress",
        "TRUNCATE bridge_progress",
        "UPDATE bridge_progress SET client_id = 'someone-else'",
    ],
)
def test_bridge_role_is_refused_what_the_bridge_does_not_need(
    bridge_database_url: str, statement: str
) -> None:
    with (
        psycopg.connect(bridge_database_url, autocommit=True) as conn,
        pytest.raises(InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_mosquitto_round_trips_a_qos1_message(mqtt_url: str, mqtt_client: MqttTestClient) -> None:
    topic = f"harness/{uuid.uuid4().hex}"
    with MqttTestClient.from_url(mqtt_url) as subscriber:
        subscriber.subscribe(topic, qos=1)

        mqtt_client.publish(topic, b"21.5", qos=1)

        [message] = subscriber.wait_for_messages(1, topic=topic)
    assert (message.payload, message.qos) == (b"21.5", 1)


def test_mosquitto_restart_keeps_a_persistent_sessions_queued_message(
    restartable_mosquitto: MosquittoServer, mqtt_client: MqttTestClient
) -> None:
    topic = f"harness/{uuid.uuid4().hex}"
    client_id = f"harness-{uuid.uuid4().hex[:8]}"

    def persistent_subscriber() -> MqttTestClient:
        return MqttTestClient.from_url(
            restartable_mosquitto.url, client_id=client_id, clean_start=False,
            session_expiry_s=300,
        )

    with persistent_subscriber() as subscriber:
        subscriber.subscribe(topic, qos=1)
    mqtt_client.publish(topic, b"queued while offline", qos=1)

    restartable_mosquitto.restart()

    with persistent_subscriber() as subscriber:
        [message] = subscriber.wait_for_messages(1, topic=topic)
    assert message.payload == b"queued while offline"


def test_mosquitto_publish_many_gets_every_puback(
    mqtt_url: str, mqtt_client: MqttTestClient
) -> None:
    topic = f"harness/{uuid.uuid4().hex}"
    with MqttTestClient.from_url(mqtt_url) as subscriber:
        subscriber.subscribe(topic, qos=1)

        sent = mqtt_client.publish_many((topic, str(i)) for i in range(2000))

        messages = subscriber.wait_for_messages(sent, topic=topic, timeout=30)
    assert sorted(int(m.payload) for m in messages) == list(range(2000))


def test_postgres_immediate_stop_keeps_committed_rows(
    restartable_postgres: PostgresServer, admin_database_url: str
) -> None:
    with psycopg.connect(admin_database_url) as conn:
        conn.execute(INSERT_READING, (7, datetime(2024, 1, 1, tzinfo=UTC)))

    restartable_postgres.stop("immediate")
    assert not restartable_postgres.is_running()
    restartable_postgres.restart()

    with psycopg.connect(admin_database_url) as conn:
        rows = conn.execute("SELECT sensor_id FROM readings").fetchall()
    assert rows == [(7,)]
