"""Corrections (BRIDGE_ON_CONFLICT) against a real PostgreSQL: the sink itself, then workers over MQTT.

The sink tests hand PostgresSink batches made by parse_message, as a worker
does, so each one says exactly which versions share a transaction.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bridge.errors import SinkMisconfigured
from bridge.model import Delivery, Limits
from bridge.store.database import Database
from bridge.store.revisions import OnConflict
from bridge.store.sink import PostgresSink, WriteResult
from bridge.validation import parse_message
from devstack import corrections
from devstack.mqtt_client import MqttTestClient
from devstack.workers import StartWorker
from iotcommon.contract import reading_topic

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MakeSink = Callable[..., PostgresSink]


def version(value: float, revision: int | None = None, *, unit: str = "C", at: datetime = AT) -> bytes:
    """One reading of sensor 7's temperature at `at` (no `revision` field when None)."""
    body: dict[str, Any] = {"sensor_id": 7, "timestamp": at.isoformat(), "variable": "t", "value": value, "unit": unit}
    if revision is not None:
        body["revision"] = revision
    return json.dumps(body).encode()


def batch(*payloads: bytes) -> list[Delivery]:
    """One delivery per payload (on its sensor's topic), validated as a worker validates it."""
    now = datetime.now(UTC)
    deliveries = []
    for mid, payload in enumerate(payloads, start=1):
        topic = reading_topic(json.loads(payload)["sensor_id"])
        deliveries.append(Delivery(mid, 1, 1, topic, payload, now, parse_message(topic, payload, now=now,
                                                                                  limits=Limits())))
    return deliveries


@pytest.fixture
def make_sink(bridge_database_url: str, bridge_update_database_url: str) -> Iterator[MakeSink]:
    """make_sink(on_conflict, client_id=..., url=...): a PostgresSink as a worker builds it; closed afterwards."""
    sinks: list[PostgresSink] = []

    def make(on_conflict: OnConflict, *, client_id: str = "w1", url: str | None = None) -> PostgresSink:
        default = bridge_update_database_url if on_conflict is OnConflict.UPDATE else bridge_database_url
        database = Database(url or default, application_name=client_id, statement_timeout_ms=10_000)
        sink = PostgresSink(database, client_id=client_id, on_conflict=on_conflict)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def table(admin_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin_url) as conn:
        return conn.execute(query).fetchall()


def readings(admin_url: str) -> list[tuple[Any, ...]]:
    return table(admin_url, 'SELECT value, unit, revision FROM readings ORDER BY sensor_id, "timestamp", variable')


def revisions(admin_url: str) -> list[tuple[Any, ...]]:
    return table(admin_url, "SELECT value, unit, revision, replaced_by FROM reading_revisions ORDER BY id")


def dead_letters(admin_url: str) -> list[tuple[Any, ...]]:
    return table(admin_url, "SELECT reason_code, payload FROM rejected_messages ORDER BY id")


def counts(result: WriteResult) -> tuple[int, int, int, int, int, int]:
    """(stored, revised, duplicates, conflicts, stale, rejected)."""
    return result.stored, result.revised, result.duplicates, result.conflicts, result.stale, result.rejected


# --- keep mode: as before, the revision is stored and compared -----------------------------------


def test_keep_mode_stores_the_revision_and_any_other_version_is_a_conflict(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    sink = make_sink(OnConflict.KEEP)
    first, higher, only_revision = version(1.0, 1), version(2.0, 2), version(1.0, 2)

    assert counts(sink.write(batch(first))) == (1, 0, 0, 0, 0, 0)
    assert counts(sink.write(batch(higher, first, only_revision))) == (0, 0, 1, 2, 0, 0)

    assert readings(admin_database_url) == [(1.0, "C", 1)]
    assert revisions(admin_database_url) == []
    assert [(code, bytes(payload)) for code, payload in dead_letters(admin_database_url)] == [
        ("conflict", higher), ("conflict", only_revision)]


# --- update mode: one transaction at a time ------------------------------------------------------


def test_a_higher_revision_replaces_the_stored_reading_and_records_it(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    sink = make_sink(OnConflict.UPDATE, client_id="w-update")
    sink.write(batch(version(1.0)))
    [(first_ingested,)] = table(admin_database_url, "SELECT ingested_at FROM readings")

    assert counts(sink.write(batch(version(1.5, 1, unit="K")))) == (0, 1, 0, 0, 0, 0)

    assert readings(admin_database_url) == [(1.5, "K", 1)]
    [(value, unit, revision, ingested_at, replaced_at, by)] = table(
        admin_database_url,
        "SELECT value, unit, revision, ingested_at, replaced_at, replaced_by FROM reading_revisions")
    [(now_ingested,)] = table(admin_database_url, "SELECT ingested_at FROM readings")
    assert (value, unit, revision, by) == (1.0, "C", 0, "w-update")
    assert ingested_at == first_ingested, "the replaced version keeps when it was ingested"
    assert replaced_at == now_ingested > first_ingested, "replaced when the new version was ingested"
    assert dead_letters(admin_database_url) == []


def test_copies_of_the_current_or_a_replaced_version_are_duplicates(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    sink = make_sink(OnConflict.UPDATE)
    sink.write(batch(version(1.0, 0)))
    sink.write(batch(version(2.0, 1)))

    result = sink.write(batch(version(2.0, 1), version(1.0, 0), version(1.0, 0)))

    assert counts(result) == (0, 0, 3, 0, 0, 0)
    assert readings(admin_database_url) == [(2.0, "C", 1)]
    assert revisions(admin_database_url) == [(1.0, "C", 0, "w1")]
    assert dead_letters(admin_database_url) == []


def test_the_same_revision_with_another_value_is_a_conflict_and_a_lower_new_one_is_stale(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    sink = make_sink(OnConflict.UPDATE)
    sink.write(batch(version(2.0, 2)))
    same, lower = version(9.0, 2), version(1.0, 1)

    assert counts(sink.write(batch(same, lower))) == (0, 0, 0, 1, 1, 0)

    assert readings(admin_database_url) == [(2.0, "C", 2)]
    assert revisions(admin_database_url) == []
    assert [(code, bytes(payload)) for code, payload in dead_letters(admin_database_url)] == [
        ("conflict", same), ("stale_revision", lower)]
    [reason] = table(admin_database_url, "SELECT reason FROM rejected_messages WHERE reason_code = 'stale_revision'")
    assert "revision 2" in reason[0] and "revision 1" in reason[0] and "kept" in reason[0]


# The arrival order of one key's versions, and what each must become (README, "Corrections").
ARRIVALS = [
    (version(1.0, 0), "stored"),
    (version(3.0, 2), "revised"),
    (version(2.0, 1), "stale"),       # lower than the current 2, never current
    (version(3.0, 2), "duplicate"),   # the current version again
    (version(3.5, 2), "conflict"),    # the current revision, another value
    (version(1.0, 0), "duplicate"),   # a replaced version again
    (version(4.0, 3, unit="K"), "revised"),
]
EXPECTED_READINGS = [(4.0, "K", 3)]
EXPECTED_REVISIONS = [(1.0, "C", 0, "w1"), (3.0, "C", 2, "w1")]
EXPECTED_DEAD_LETTERS = [("stale_revision", version(2.0, 1)), ("conflict", version(3.5, 2))]


def verdict_counts(verdicts: list[str]) -> tuple[int, int, int, int, int, int]:
    return (verdicts.count("stored"), verdicts.count("revised"), verdicts.count("duplicate"),
            verdicts.count("conflict"), verdicts.count("stale"), 0)


def test_several_versions_of_a_key_in_one_batch_resolve_in_arrival_order(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    result = make_sink(OnConflict.UPDATE).write(batch(*(payload for payload, _ in ARRIVALS)))

    assert counts(result) == verdict_counts([verdict for _, verdict in ARRIVALS])
    assert readings(admin_database_url) == EXPECTED_READINGS
    assert revisions(admin_database_url) == EXPECTED_REVISIONS
    assert [(code, bytes(payload)) for code, payload in dead_letters(admin_database_url)] == EXPECTED_DEAD_LETTERS


def test_the_same_versions_one_batch_each_end_the_same(make_sink: MakeSink, admin_database_url: str) -> None:
    sink = make_sink(OnConflict.UPDATE)
    total = WriteResult()

    for payload, _ in ARRIVALS:
        total.add(sink.write(batch(payload)))

    assert counts(total) == verdict_counts([verdict for _, verdict in ARRIVALS])
    assert readings(admin_database_url) == EXPECTED_READINGS
    assert revisions(admin_database_url) == EXPECTED_REVISIONS
    assert [(code, bytes(payload)) for code, payload in dead_letters(admin_database_url)] == EXPECTED_DEAD_LETTERS


def test_new_keys_and_corrections_mix_in_one_batch(make_sink: MakeSink, admin_database_url: str) -> None:
    sink = make_sink(OnConflict.UPDATE)
    later = AT + timedelta(seconds=1)
    sink.write(batch(version(1.0, 0)))

    result = sink.write(batch(version(5.0, 0, at=later), version(1.1, 1), version(5.5, 1, at=later)))

    assert counts(result) == (1, 2, 0, 0, 0, 0)
    assert readings(admin_database_url) == [(1.1, "C", 1), (5.5, "C", 1)]
    assert sorted(revisions(admin_database_url)) == [(1.0, "C", 0, "w1"), (5.0, "C", 0, "w1")]


def test_concurrent_workers_leave_the_highest_revision_and_account_for_every_version(
    make_sink: MakeSink, admin_database_url: str
) -> None:
    """Four sinks (four workers' connections) write shuffled versions of the same keys at the same time."""
    sent = corrections.build(keys=10, revisions=20, duplicate_share=0.2, seed=3)
    rng = random.Random(5)
    shares: list[list[bytes]] = [[] for _ in range(4)]
    for _, payload in sent.messages:
        shares[rng.randrange(4)].append(payload)
    sinks = [make_sink(OnConflict.UPDATE, client_id=f"c{n}") for n in range(4)]
    start, errors = threading.Barrier(4), []

    def work(sink: PostgresSink, payloads: list[bytes]) -> None:
        try:
            start.wait()
            for first in range(0, len(payloads), 5):
                sink.write(batch(*payloads[first:first + 5]))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(sink, share)) for sink, share in zip(sinks, shares, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    corrections.assert_resolved(corrections.outcome(admin_database_url), sent)


# --- privileges ----------------------------------------------------------------------------------


def test_update_mode_with_the_insert_only_role_stops_naming_the_grant(
    make_sink: MakeSink, bridge_database_url: str
) -> None:
    sink = make_sink(OnConflict.UPDATE, url=bridge_database_url)

    with pytest.raises(SinkMisconfigured, match=r"lacks SELECT on readings\.ingested_at.*grant it iot_bridge_update"):
        sink.check()


def test_keep_mode_runs_with_the_update_role_too(make_sink: MakeSink, bridge_update_database_url: str) -> None:
    make_sink(OnConflict.KEEP, url=bridge_update_database_url).check()


def test_the_insert_only_role_may_not_update_or_read_revisions(bridge_database_url: str) -> None:
    with psycopg.connect(bridge_database_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE readings SET value = 0")
    with psycopg.connect(bridge_database_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM reading_revisions")


def test_the_update_role_may_not_change_a_key_or_delete(bridge_update_database_url: str) -> None:
    for statement in ("UPDATE readings SET sensor_id = 1", "DELETE FROM readings", "DELETE FROM reading_revisions",
                      "UPDATE reading_revisions SET value = 0"):
        with psycopg.connect(bridge_update_database_url) as conn, pytest.raises(
                psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


# --- workers over MQTT ---------------------------------------------------------------------------


def test_three_workers_resolve_shuffled_revisions(
    start: StartWorker, mqtt_url: str, bridge_update_database_url: str, admin_database_url: str
) -> None:
    workers = [start(f"u{n}", database_url=bridge_update_database_url, bridge_on_conflict="update",
                     bridge_batch_size=20, bridge_linger_ms=5)
               for n in (1, 2, 3)]
    sent = corrections.build(keys=150, revisions=5)  # each version once: each is accounted for exactly once
    with MqttTestClient.from_url(mqtt_url) as publisher:
        publisher.publish_many(sent.messages)

    seen = corrections.wait_until_resolved(admin_database_url, sent)
    for worker in workers:
        assert worker.terminate(15) == 0

    corrections.assert_resolved(corrections.outcome(admin_database_url), sent)
    assert len(seen.replaced_by) >= 2, "several workers replaced versions"
    beats = [worker.heartbeat() for worker in workers]  # each one's last, written after its drain
    assert sum(beat.received for beat in beats) == len(sent.messages)
    assert sum(beat.revised for beat in beats) == sum(map(len, seen.replaced.values()))
    assert sum(beat.stale for beat in beats) == sum(map(len, seen.stale.values()))


def test_a_worker_in_update_mode_without_the_grant_exits_naming_it(
    start: StartWorker, bridge_database_url: str
) -> None:
    worker = start("nogrant", ready=False, database_url=bridge_database_url, bridge_on_conflict="update")

    assert worker.wait(30) == 1
    assert "grant it iot_bridge_update" in worker.log_text()
