"""iotcommon.contract: topics, status words, the heartbeat and rejection codes, as both sides read them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from bridge.stats import Stats
from iotcommon.contract import (
    HEARTBEAT_FILTER,
    HEARTBEAT_PREFIX,
    PROBE_FILTER,
    READINGS_FILTER,
    SITE_BRIDGE_STATES,
    STATUS_FILTER,
    STATUS_PREFIX,
    WORKER_TOPICS,
    Heartbeat,
    MalformedHeartbeat,
    RejectionCode,
    WorkerStatus,
    client_id_of,
    heartbeat_topic,
    parse_heartbeat,
    probe_topic,
    reading_topic,
    shared_subscription,
    site_bridge_of,
    site_bridge_state_topic,
    status_topic,
    topic_sensor_segment,
)

AT = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
README = Path(__file__).resolve().parents[2] / "README.md"


def test_topics_are_built_and_parsed_by_the_same_module() -> None:
    assert reading_topic(42) == "sensors/42/readings"
    assert topic_sensor_segment(reading_topic(42)) == "42"
    assert topic_sensor_segment("sensors/42/readings\n") is None, "no trailing newline sneaks through"
    assert topic_sensor_segment("sensors/42/other") is None
    assert client_id_of(status_topic("bridge-1"), STATUS_PREFIX) == "bridge-1"
    assert client_id_of(heartbeat_topic("bridge-1"), HEARTBEAT_PREFIX) == "bridge-1"
    assert client_id_of(heartbeat_topic("bridge-1"), STATUS_PREFIX) is None
    assert client_id_of(STATUS_PREFIX, STATUS_PREFIX) is None, "no id, no worker"
    assert site_bridge_of(site_bridge_state_topic("site-1")) == "site-1"


@pytest.mark.parametrize(("topic_filter", "topic"), [
    (READINGS_FILTER, reading_topic(7)),
    (STATUS_FILTER, status_topic("bridge-1")),
    (HEARTBEAT_FILTER, heartbeat_topic("bridge-1")),
    (WORKER_TOPICS, status_topic("bridge-1")),
    (WORKER_TOPICS, heartbeat_topic("bridge-1")),
    (PROBE_FILTER, probe_topic("wd-1")),
    (SITE_BRIDGE_STATES, site_bridge_state_topic("site-1")),
])
def test_each_filter_takes_the_topics_built_for_it(topic_filter: str, topic: str) -> None:
    """The filters the watchdog subscribes to and the broker grants cover what the topic builders make."""
    assert topic_matches_sub(topic_filter, topic)


@pytest.mark.parametrize(("topic_filter", "topic"), [
    (STATUS_FILTER, heartbeat_topic("bridge-1")),
    (HEARTBEAT_FILTER, status_topic("bridge-1")),
    (READINGS_FILTER, status_topic("bridge-1")),
    (WORKER_TOPICS, reading_topic(7)),
])
def test_no_filter_takes_another_kind_of_topic(topic_filter: str, topic: str) -> None:
    assert not topic_matches_sub(topic_filter, topic)


def test_the_wire_forms_of_the_topics() -> None:
    """What the devices, the broker's ACLs and an older release's watchdog expect, spelled out once here."""
    assert (probe_topic("wd-1"), site_bridge_state_topic("site-1")) == (
        "watchdog/probe/wd-1", "$SYS/broker/connection/site-1/state")
    assert shared_subscription("g1") == "$share/g1/sensors/+/readings"
    assert shared_subscription("g1", "a/#") == "$share/g1/a/#"


@pytest.mark.parametrize(("payload", "status"), [
    (b"online", WorkerStatus.ONLINE),
    (b"offline", WorkerStatus.OFFLINE),
    (b"crashed", WorkerStatus.CRASHED),
    (b"", None),
    (b"asleep", None),
    (b"\xff", None),
])
def test_status_words(payload: bytes, status: WorkerStatus | None) -> None:
    assert WorkerStatus.parse(payload) is status


def test_the_worker_publishes_what_the_watchdog_reads() -> None:
    stats = Stats(received=10, stored=7, duplicates=2, rejected=1, in_flight=3, last_commit_at=AT)
    sent = stats.heartbeat(client_id="bridge-1", at=AT).model_dump_json().encode()

    beat = parse_heartbeat(sent)

    assert beat is not None
    assert (beat.client_id, beat.at, beat.received, beat.in_flight, beat.last_commit_at) == ("bridge-1", AT, 10, 3, AT)
    assert beat.db_ok is True and beat.mqtt_connected is False


def test_a_newer_worker_s_extra_fields_are_ignored() -> None:
    data = json.loads(Stats().heartbeat(client_id="w", at=AT).model_dump_json())

    assert parse_heartbeat(json.dumps({**data, "revisions": 5}).encode()) == Heartbeat.model_validate(data)


def test_an_older_worker_s_heartbeat_without_the_corrections_counters_still_reads() -> None:
    data = json.loads(Stats(revised=3, stale=1).heartbeat(client_id="w", at=AT).model_dump_json())
    older = {key: value for key, value in data.items() if key not in ("revised", "stale")}

    beat = parse_heartbeat(json.dumps(older).encode())

    assert beat is not None
    assert (beat.revised, beat.stale) == (0, 0)
    assert parse_heartbeat(json.dumps(data).encode()) == Heartbeat.model_validate(data)


def test_a_cleared_heartbeat_is_none() -> None:
    assert parse_heartbeat(b"") is None


@pytest.mark.parametrize(("change", "named"), [
    ({"in_flight": "many"}, "in_flight"),
    ({"at": "2026-11-29T08:00:00"}, "at"),  # a naive time cannot be trusted
    ({"db_ok": None}, "db_ok"),
    ({"stored": -1}, "stored"),
    ({"revised": -1}, "revised"),
])
def test_a_malformed_heartbeat_names_the_field(change: dict[str, object], named: str) -> None:
    data = {**json.loads(Stats().heartbeat(client_id="w", at=AT).model_dump_json()), **change}

    with pytest.raises(MalformedHeartbeat, match=f"^{named}: "):
        parse_heartbeat(json.dumps(data).encode())


@pytest.mark.parametrize("payload", [b"[1]", b"\xff", b"not json", b"{}"])
def test_what_is_not_a_heartbeat_object_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedHeartbeat):
        parse_heartbeat(payload)


def test_every_rejection_code_is_documented_in_the_readme_with_an_example() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Rejection codes"):]
    section = section[: section.index("\n## ")]
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE)

    assert documented == [code.value for code in RejectionCode]
