"""Partitioned readings on a real PostgreSQL with pg_partman and its background worker, with real workers.

One throwaway server for the module, started as every stack starts it: with
pg_partman_bgw preloaded (here running maintenance every second), readings
partitioned by `python -m bridge partition setup`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fix_watchdog import StartWatchdog, alerts_about, kinds

from devstack import traffic
from devstack.discord_stub import DiscordStub
from devstack.grafana_sql import expand
from devstack.mqtt_client import MqttTestClient, PacedPublisher
from devstack.postgres import (
    BRIDGE_TEST_ROLE,
    BRIDGE_UPDATE_TEST_ROLE,
    READER_TEST_ROLE,
    REPLAY_TEST_ROLE,
    PostgresServer,
    apply_schema,
    ensure_login_role,
    partman_bgw_settings,
)
from devstack.processes import REPO_ROOT, wait_until
from devstack.urls import login_password, login_url, with_login
from devstack.workers import StartWorker
from integration.test_dashboards import COLUMNS, CONTEXT, T0, TARGETS
from iotcommon.contract import reading_topic

PREMAKE = 3
COMMAND_TIMEOUT_S = 120


def partition(url: str, action: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bridge partition <action>` as the owner, as an operator runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PARTITION_"))}
    environ.update({"DATABASE_URL": url, "PARTITION_PREMAKE": str(PREMAKE), **env})
    return subprocess.run([sys.executable, "-m", "bridge", "partition", action], cwd=REPO_ROOT, env=environ,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def replay(url: str, *args: str, **env: str) -> str:
    """replay-rejected as the replay role; its summary line."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    environ.update({"DATABASE_URL": login_url(url, REPLAY_TEST_ROLE), **env})
    result = subprocess.run([sys.executable, "-m", "bridge", "replay-rejected", *args], cwd=REPO_ROOT, env=environ,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """The statement's rows (none for a statement that returns none)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def partition_starts(url: str) -> list[datetime]:
    """The lower bound of every partition of readings, oldest first (from pg_partman's own listing)."""
    names = query(url, "SELECT partition_tablename FROM partman.show_partitions('public.readings')")
    return [query(url, "SELECT child_start_time FROM partman.show_partition_info(%s)", (f"public.{name}",))[0][0]
            for (name,) in names]


def day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def premade_ends(today: datetime) -> tuple[datetime, datetime]:
    """Where the last premade partition may start: pg_partman rounds the days ahead of now to the nearest."""
    return today + timedelta(days=PREMAKE), today + timedelta(days=PREMAKE + 1)


def message(sensor_id: int, at: datetime, value: float = 1.5, **extra: Any) -> dict[str, Any]:
    return {"sensor_id": sensor_id, "timestamp": at.isoformat(), "variable": "t", "value": value, "unit": "C", **extra}


def publish(client: MqttTestClient, sensor_id: int, body: Any) -> None:
    client.publish(reading_topic(sensor_id), json.dumps(body).encode())


@pytest.fixture(scope="module")
def partman_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL with pg_partman's background worker running maintenance every second."""
    server = PostgresServer(settings=partman_bgw_settings("postgres", interval_s=1))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def partitioned_url(partman_server: PostgresServer) -> str:
    """The owner's URL of a database with schema.sql and readings partitioned by `partition setup`."""
    url = partman_server.url()
    apply_schema(url)
    result = partition(url, "setup", PARTITION_RETENTION="none")  # test_retention_... sets one itself
    assert result.returncode == 0, result.stdout + result.stderr
    assert "readings converted" in result.stdout and "0 rows" in result.stdout
    return url


@pytest.fixture
def partitioned(partitioned_url: str) -> str:
    """partitioned_url with empty tables and the partitions setup made (a test may drop or add some)."""
    url = partitioned_url
    query(url, "TRUNCATE readings, reading_revisions, rejected_messages, rejected_replays")
    query(url, "UPDATE partman.part_config SET automatic_maintenance = 'on', retention = NULL")
    oldest = day(datetime.now(UTC)) - timedelta(days=PREMAKE)
    for start_at in partition_starts(url):
        if start_at < oldest:
            query(url, f"DROP TABLE readings_p{start_at:%Y_%m_%d}")
    query(url, "SELECT partman.run_maintenance('public.readings')")
    return url


def test_setup_partitions_readings_with_no_default_and_premakes_from_the_clock(partitioned: str) -> None:
    today = day(datetime.now(UTC))
    starts = partition_starts(partitioned)

    assert query(partitioned, "SELECT relkind FROM pg_class WHERE oid = 'readings'::regclass") == [("p",)]
    assert query(partitioned, "SELECT partman.check_default(false)") == [], "no DEFAULT partition"
    # pg_partman rounds the premade days from now: PREMAKE of them before noon, one more after.
    assert starts == [today + timedelta(days=n) for n in range(-PREMAKE, len(starts) - PREMAKE)]
    assert starts[-1] in premade_ends(today)
    again = partition(partitioned, "setup")
    assert again.returncode == 0 and "already partitioned" in again.stdout, again.stdout + again.stderr


def test_a_partitioned_stack_stores_dedupes_and_dead_letters_what_no_partition_or_bound_allows(
    partitioned: str, start: StartWorker, mqtt_client: MqttTestClient
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    backlog = datetime(2021, 3, 1, 12, tzinfo=UTC)  # in range (after BRIDGE_MIN_TIMESTAMP), before every partition
    start("part", database_url=login_url(partitioned, BRIDGE_TEST_ROLE))

    publish(mqtt_client, 5, message(5, now))
    publish(mqtt_client, 5, message(5, now))  # a re-delivery: deduplicated by the key, in its partition
    publish(mqtt_client, 6, [message(6, now), message(6, backlog), message(6, now - timedelta(hours=1))])
    publish(mqtt_client, 7, message(7, datetime(1970, 1, 1, tzinfo=UTC)))  # a clock never set
    publish(mqtt_client, 8, message(8, datetime(2030, 1, 1, tzinfo=UTC)))  # a bad NTP answer
    wait_until(lambda: traffic.counts(partitioned) == (3, 3), 30, interval=0.1, message="3 stored, 3 dead letters")

    assert traffic.stored_rows(partitioned) == {(5, now, "t", 1.5, "C"), (6, now, "t", 1.5, "C"),
                                                (6, now - timedelta(hours=1), "t", 1.5, "C")}
    letters = query(partitioned, "SELECT topic, reason_code, reason, payload FROM rejected_messages ORDER BY topic")
    assert [(topic, code) for topic, code, _, _ in letters] == [
        (reading_topic(6), "no_partition"), (reading_topic(7), "past_timestamp"),
        (reading_topic(8), "future_timestamp")]
    no_partition, past, future = (reason for _, _, reason, _ in letters)
    assert no_partition.startswith("element 1: timestamp: no partition of readings holds 2021-03-01T12:00:00+00:00")
    assert json.loads(bytes(letters[0][3])) == message(6, backlog), "only that element, with its own bytes"
    assert "BRIDGE_MIN_TIMESTAMP=2020-01-01T00:00:00+00:00" in past
    assert "BRIDGE_MAX_FUTURE_S=300" in future

    # Once the partitions exist (and the operator widened the floor for the 1970 one), replay stores them.
    query(partitioned, "SELECT partman.create_partition_time('public.readings', ARRAY[%s, %s]::timestamptz[])",
          (day(backlog), datetime(1970, 1, 1, tzinfo=UTC)))
    assert "stored=1" in replay(partitioned, "--code", "no_partition")
    assert "stored=1" in replay(partitioned, "--code", "past_timestamp", BRIDGE_MIN_TIMESTAMP="1970-01-01T00:00:00Z")
    assert "still_invalid=1" in replay(partitioned, "--code", "future_timestamp")
    stored = {row[:2] for row in traffic.stored_rows(partitioned)}
    assert stored >= {(6, backlog), (7, datetime(1970, 1, 1, tzinfo=UTC))}


def test_update_mode_replaces_a_reading_in_its_partition_and_keeps_the_revision(
    partitioned: str, start: StartWorker, mqtt_client: MqttTestClient
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    start("upd", database_url=login_url(partitioned, BRIDGE_UPDATE_TEST_ROLE), bridge_on_conflict="update")

    publish(mqtt_client, 9, message(9, at, 20.0))
    wait_until(lambda: traffic.counts(partitioned) == (1, 0), 30, interval=0.1, message="the first version")
    publish(mqtt_client, 9, message(9, at, 21.0, revision=1))
    wait_until(lambda: query(partitioned, "SELECT count(*) FROM reading_revisions") == [(1,)], 30, interval=0.1,
               message="the replaced version recorded")

    assert query(partitioned, "SELECT value, revision FROM readings") == [(21.0, 1)]
    assert query(partitioned, "SELECT value, revision FROM reading_revisions") == [(20.0, 0)]
    assert query(partitioned, "SELECT tableoid::regclass::text FROM readings") == [
        (f"readings_p{at:%Y_%m_%d}",)], "the row stays in its day's partition"


def test_stray_readings_never_stop_tomorrows_partition_from_being_made(
    partitioned: str, start: StartWorker, mqtt_client: MqttTestClient
) -> None:
    start("stray", database_url=login_url(partitioned, BRIDGE_TEST_ROLE))
    for sensor_id, at in ((11, datetime(1970, 1, 1, tzinfo=UTC)), (12, datetime(2030, 6, 1, tzinfo=UTC)),
                          (13, datetime(2099, 1, 1, tzinfo=UTC))):
        publish(mqtt_client, sensor_id, message(sensor_id, at))
    wait_until(lambda: traffic.counts(partitioned) == (0, 3), 30, interval=0.1, message="3 dead letters")
    # Even the owner, past the bridge's bounds, cannot leave a stray row: there is no default partition.
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition of relation"):
        query(partitioned, """INSERT INTO readings (sensor_id, "timestamp", variable, value, unit)
                              VALUES (12, '2030-06-01Z', 't', 1, 'C')""")
    # The days pass: maintenance stops, the premade partitions are used up down to today's.
    query(partitioned, "UPDATE partman.part_config SET automatic_maintenance = 'off'")
    today = day(datetime.now(UTC))
    for start_at in partition_starts(partitioned):
        if start_at > today:
            query(partitioned, f"DROP TABLE readings_p{start_at:%Y_%m_%d}")
    assert max(partition_starts(partitioned)) == today

    query(partitioned, "UPDATE partman.part_config SET automatic_maintenance = 'on'")  # the background worker's turn

    tomorrow = today + timedelta(days=1)
    wait_until(lambda: tomorrow in partition_starts(partitioned), 20, interval=0.2, message="tomorrow's partition")
    wait_until(lambda: max(partition_starts(partitioned)) in premade_ends(today), 20, interval=0.2,
               message=f"{PREMAKE} days premade")
    assert max(partition_starts(partitioned)) in premade_ends(today), "from the clock, not from 2030"


def test_retention_drops_old_partitions_revisions_and_dead_letters(partitioned: str) -> None:
    query(partitioned, "UPDATE partman.part_config SET automatic_maintenance = 'off'")  # this test runs it
    old = day(datetime.now(UTC)) - timedelta(days=400)
    query(partitioned, "SELECT partman.create_partition_time('public.readings', ARRAY[%s]::timestamptz[])", (old,))
    query(partitioned, """INSERT INTO readings (sensor_id, "timestamp", variable, value, unit)
                          VALUES (1, %s, 't', 1, 'C'), (1, now(), 't', 2, 'C')""", (old,))
    query(partitioned, """
        INSERT INTO reading_revisions (sensor_id, "timestamp", variable, value, unit, revision, ingested_at,
                                       replaced_at, replaced_by)
        VALUES (1, now(), 'a', 1, 'C', 0, now(), now() - interval '400 days', 'w'),
               (1, now(), 'b', 1, 'C', 0, now(), now(), 'w')""")
    query(partitioned, """
        INSERT INTO rejected_messages (received_at, topic, payload, reason, reason_code, client_id)
        VALUES (now() - interval '100 days', 't', 'old', 'r', 'not_json', 'w'),
               (now(), 't', 'new', 'r', 'not_json', 'w')
    """)
    query(partitioned, """INSERT INTO rejected_replays (rejected_id, outcome, detail)
                          SELECT id, 'still invalid', 'd' FROM rejected_messages""")

    result = partition(partitioned, "setup", PARTITION_RETENTION="365 days")  # applies it, then maintains

    assert result.returncode == 0, result.stdout + result.stderr
    assert "dropped=1 revisions deleted=1 dead letters deleted=1" in result.stdout
    assert old not in partition_starts(partitioned)
    assert query(partitioned, "SELECT value FROM readings") == [(2.0,)]
    assert query(partitioned, "SELECT variable FROM reading_revisions") == [("b",)]
    assert query(partitioned, "SELECT payload FROM rejected_messages") == [(b"new",)]
    assert query(partitioned, "SELECT count(*) FROM rejected_replays") == [(1,)]


CONVERTED_ROWS = 1_000_000


def test_converting_a_million_rows_under_load_loses_and_duplicates_nothing(
    partman_server: PostgresServer, start: StartWorker, mqtt_url: str
) -> None:
    url = partman_server.url(dbname="convert")
    query(partman_server.url(), "DROP DATABASE IF EXISTS convert")
    query(partman_server.url(), "CREATE DATABASE convert")
    apply_schema(url)
    # A filled table, made server-side: 1,000 sensors (1001-2000), a reading every 0.2 s over two days up to
    # traffic.BASE_AT's day, so the live traffic below lands in a partition the conversion makes.
    query(url, """
        INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, ingested_at)
        SELECT 1001 + i %% 1000, %s - i * interval '200 ms', 'temperature', i, 'C', now()
        FROM generate_series(1, %s) AS i
    """, (traffic.BASE_AT + timedelta(hours=12), CONVERTED_ROWS))
    before = query(url, "SELECT sum(hashtext(r::text)::bigint), count(*) FROM readings AS r")
    start("conv", database_url=login_url(url, BRIDGE_TEST_ROLE), bridge_statement_timeout_ms=2000)
    sent = traffic.build(3000, duplicate_share=0.1, invalid_share=0.05)
    publisher = PacedPublisher(mqtt_url, sent.messages, rate_per_s=300)  # 10 s of traffic, across the conversion

    wait_until(lambda: traffic.counts(url)[0] > CONVERTED_ROWS, 30, interval=0.1, message="traffic flowing")
    result = partition(url, "setup", PARTITION_RETENTION="none")
    publisher.join(60)

    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)  # "readings converted in N s (ingestion held that long)"
    wait_until(lambda: traffic.counts(url) == (CONVERTED_ROWS + len(sent.expected), sent.invalid), 60,
               interval=0.2, message="every reading and dead letter of the traffic")
    live = query(url, 'SELECT sensor_id, "timestamp", variable, value, unit FROM readings WHERE sensor_id <= 1000')
    assert set(live) == sent.expected and len(live) == len(sent.expected)
    assert set(traffic.rejected_messages(url)) == sent.rejected
    assert query(url, "SELECT sum(hashtext(r::text)::bigint), count(*) FROM readings AS r WHERE sensor_id > 1000"
                 ) == before, "the converted rows, each exactly once"


def test_the_watchdog_warns_when_the_premade_partitions_run_out_and_says_when_they_are_back(
    partitioned: str, start_watchdog: StartWatchdog, discord: DiscordStub
) -> None:
    with psycopg.connect(partitioned, autocommit=True) as conn:
        ensure_login_role(conn, "watchdog_test", login_password("watchdog_test"), "iot_watchdog")
    watchdog = start_watchdog(DATABASE_URL=with_login(partitioned, "watchdog_test", login_password("watchdog_test")))
    health = watchdog.wait_until_all_ok()
    assert health["components"]["partitions"] == "ok"

    query(partitioned, "UPDATE partman.part_config SET automatic_maintenance = 'off'")  # maintenance stops
    today = day(datetime.now(UTC))
    for start_at in partition_starts(partitioned):
        if start_at > today:
            query(partitioned, f"DROP TABLE readings_p{start_at:%Y_%m_%d}")
    wait_until(lambda: alerts_about(discord, "partitions"), 30, message="a DOWN alert for the partitions")
    query(partitioned, "UPDATE partman.part_config SET automatic_maintenance = 'on'")  # the background worker's turn
    wait_until(lambda: len(alerts_about(discord, "partitions")) == 2, 30, message="RECOVERED for the partitions")

    assert kinds(alerts_about(discord, "partitions")) == ["DOWN", "RECOVERED"]
    assert "only 0 partitions of readings premade ahead" in alerts_about(discord, "partitions")[0].content


@pytest.mark.parametrize(("title", "ref", "raw_sql"), TARGETS, ids=[f"{t} {r}" for t, r, _ in TARGETS])
def test_every_dashboard_panel_runs_on_partitioned_readings_as_the_reader(
    partitioned: str, title: str, ref: str, raw_sql: str
) -> None:
    query(partitioned, "SELECT partman.create_partition_time('public.readings', ARRAY[%s]::timestamptz[])", (day(T0),))
    query(partitioned, """INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, ingested_at)
                          SELECT 1, at, 'temperature', m, 'u', at
                          FROM generate_series(0, 59) AS m, LATERAL (SELECT %(t0)s + m * interval '1 minute' AS at) t
                       """, {"t0": T0})
    query(partitioned, """INSERT INTO reading_revisions (sensor_id, "timestamp", variable, value, unit, revision,
                                                         ingested_at, replaced_at, replaced_by)
                          VALUES (1, %(t0)s, 'temperature', 9, 'u', 0, %(t0)s, %(t0)s, 'w')""", {"t0": T0})
    query(partitioned, """INSERT INTO rejected_messages (received_at, topic, payload, reason, reason_code, client_id)
                          VALUES (%(t0)s, 't', 'x', 'r', 'stale_revision', 'w')""", {"t0": T0})
    sql = expand(raw_sql, CONTEXT)

    with psycopg.connect(login_url(partitioned, READER_TEST_ROLE)) as conn:
        cursor = conn.execute(sql)  # built from the dashboard, not user input
        assert cursor.description is not None
        assert [column.name for column in cursor.description] == COLUMNS[title][ref]
        assert cursor.fetchall(), "the seeded data shows"
        plan = "\n".join(str(row[0]) for row in conn.execute("EXPLAIN " + sql).fetchall())
    if '"timestamp" BETWEEN' in sql:  # a panel of a time range of readings: only that day's partition is read
        assert set(re.findall(r"readings_p\d{4}_\d{2}_\d{2}", plan)) == {f"readings_p{T0:%Y_%m_%d}"}, "pruned"
