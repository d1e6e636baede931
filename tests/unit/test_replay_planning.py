"""Dead-letter replay planning, with a fake store and a fixed clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import SinkRefused
from bridge.model import Limits, Row
from bridge.replay.planning import (
    Criteria,
    RejectedMessage,
    ReplayOutcome,
    ReplayResult,
    ReplaySummary,
    replay_rejected,
    topic_matches,
)
from iotcommon.contract import RejectionCode

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RECEIVED_AT = NOW - timedelta(hours=1)
TOPIC = "sensors/7/readings"


def reading(at: datetime, *, value: float = 21.5, variable: str = "temperature") -> dict[str, object]:
    return {"sensor_id": 7, "timestamp": at.isoformat(), "variable": variable, "value": value, "unit": "C"}


def rejected(
    id_: int, payload: object, *, reason: str = "timestamp: too far in the future", topic: str = TOPIC,
    code: RejectionCode = RejectionCode.FUTURE_TIMESTAMP, received_at: datetime = RECEIVED_AT, replayed: bool = False,
) -> RejectedMessage:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return RejectedMessage(id_, received_at, topic, raw, reason, code, replayed)


FUTURE = rejected(1, reading(NOW + timedelta(minutes=10)))
GARBAGE = rejected(2, b"not json", reason="payload is not valid JSON", code=RejectionCode.NOT_JSON)


@dataclass
class FakeStore:
    """Keeps readings by key (first one wins, like ON CONFLICT DO NOTHING) and replay records."""

    messages: list[RejectedMessage]
    readings: dict[tuple[int, datetime, str], Row] = field(default_factory=dict)
    records: list[tuple[int, ReplayOutcome]] = field(default_factory=list)
    refuse: bool = False
    asked: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)

    def candidates(self, *, since: datetime | None, until: datetime | None) -> Iterator[RejectedMessage]:
        self.asked.append((since, until))
        yield from sorted(self.messages)

    def store(self, rejected_id: int, rows: Sequence[Row], decide: Callable[[int], ReplayOutcome]) -> ReplayOutcome:
        if rows and self.refuse:
            raise SinkRefused("value out of range")
        stored = 0
        for row in rows:
            key = (row.sensor_id, row.timestamp, row.variable)
            if key not in self.readings:
                self.readings[key] = row
                stored += 1
        outcome = decide(stored)
        self.records.append((rejected_id, outcome))
        return outcome


def run(
    store: FakeStore, criteria: Criteria | None = None, *, max_future_s: int = 3600, dry_run: bool = False
) -> tuple[ReplaySummary, list[str]]:
    lines: list[str] = []
    summary = replay_rejected(
        store, criteria or Criteria(), limits=Limits(max_future_s=max_future_s), now=lambda: NOW, dry_run=dry_run,
        report=lines.append,
    )
    return summary, lines


def test_future_timestamp_becomes_valid_when_max_future_grows() -> None:
    store = FakeStore([FUTURE])

    summary, lines = run(store, max_future_s=3600)

    assert [row.value for row in store.readings.values()] == [21.5]
    assert store.records == [(1, ReplayOutcome(ReplayResult.STORED, "1 readings stored", 1))]
    assert (summary.examined, summary.now_valid, summary.stored, summary.still_invalid) == (1, 1, 1, 0)
    assert lines == ["#1 stored: 1 readings stored"]


def test_future_timestamp_stays_invalid_under_the_same_limit() -> None:
    store = FakeStore([FUTURE])

    summary, _ = run(store, max_future_s=300)

    assert store.readings == {}
    [(rejected_id, outcome)] = store.records
    assert (rejected_id, outcome.result, outcome.readings_stored) == (1, ReplayResult.STILL_INVALID, 0)
    assert outcome.detail.startswith("timestamp:"), "the new reason is recorded"
    assert (summary.examined, summary.now_valid, summary.still_invalid) == (1, 0, 1)


def test_still_invalid_payload_is_recorded_with_its_current_reason() -> None:
    store = FakeStore([GARBAGE])

    summary, _ = run(store)

    assert store.records[0][1].result == ReplayResult.STILL_INVALID
    assert "not valid JSON" in store.records[0][1].detail
    assert summary.still_invalid == 1


def test_dry_run_writes_nothing_and_reports_what_would_happen() -> None:
    store = FakeStore([FUTURE, GARBAGE])

    summary, lines = run(store, dry_run=True)

    assert store.readings == {} and store.records == []
    assert lines[0].startswith("#1 would be stored")
    assert lines[1].startswith("#2 would be still invalid")
    assert summary.line(dry_run=True) == (
        "replay-rejected (dry run, nothing written): "
        "examined=2 now_valid=1 stored=0 duplicates=0 still_invalid=1 skipped=0"
    )


def test_existing_key_is_a_duplicate_and_the_stored_row_is_kept() -> None:
    store = FakeStore([FUTURE])
    first = Row(7, NOW + timedelta(minutes=10), "temperature", 99.0, "C")
    store.readings[(first.sensor_id, first.timestamp, first.variable)] = first

    summary, _ = run(store)

    assert list(store.readings.values()) == [first]
    assert store.records[0][1].result == ReplayResult.DUPLICATE
    assert (summary.now_valid, summary.stored, summary.duplicates) == (1, 0, 1)


def test_array_with_a_still_invalid_element_is_partly_stored() -> None:
    good, bad = reading(NOW + timedelta(minutes=10)), {**reading(NOW, variable="rh"), "value": "high"}
    store = FakeStore([rejected(3, [good, bad])])

    summary, _ = run(store)

    [(_, outcome)] = store.records
    assert (outcome.result, outcome.readings_stored) == (ReplayResult.PARTLY_STORED, 1)
    assert "element 1: value" in outcome.detail
    assert summary.stored == 1


def test_database_refusal_is_recorded_as_still_invalid() -> None:
    store = FakeStore([FUTURE], refuse=True)

    summary, _ = run(store)

    [(_, outcome)] = store.records
    assert outcome.result == ReplayResult.STILL_INVALID
    assert "database refused the readings: value out of range" in outcome.detail
    assert summary.still_invalid == 1


def test_conflicts_and_already_replayed_are_skipped_and_counted() -> None:
    conflict = rejected(4, reading(NOW), reason="any words at all", code=RejectionCode.CONFLICT)
    replayed = rejected(5, reading(NOW - timedelta(minutes=1)), replayed=True)
    store = FakeStore([conflict, replayed])

    summary, lines = run(store)

    assert store.records == []
    assert (summary.examined, summary.skipped) == (0, 2)
    assert "conflicting duplicate" in lines[0] and "--again" in lines[1]


def test_stale_revisions_are_skipped_like_conflicts() -> None:
    stale = rejected(6, reading(NOW), reason="stale revision: kept", code=RejectionCode.STALE_REVISION)
    store = FakeStore([stale])

    summary, _ = run(store)

    assert store.records == []
    assert (summary.examined, summary.skipped) == (0, 1)


def test_again_replays_messages_replayed_before() -> None:
    store = FakeStore([rejected(5, reading(NOW), replayed=True)])

    summary, _ = run(store, Criteria(again=True))

    assert [rejected_id for rejected_id, _ in store.records] == [5]
    assert summary.examined == 1


def test_reason_topic_and_time_filters_select_only_matching_messages() -> None:
    early = rejected(6, reading(NOW), received_at=RECEIVED_AT - timedelta(days=2))
    other_topic = rejected(7, {**reading(NOW), "sensor_id": 8}, topic="sensors/8/readings")
    other_reason = rejected(8, reading(NOW), reason="unit: is required")
    store = FakeStore([FUTURE, early, other_topic, other_reason])
    since = RECEIVED_AT - timedelta(days=1)

    summary, _ = run(store, Criteria(since=since, until=NOW, reason="future", topic="sensors/7/+"))

    assert [rejected_id for rejected_id, _ in store.records] == [1]
    assert (summary.examined, summary.skipped) == (1, 0), "filtered messages are not counted as skipped"
    assert store.asked == [(since, NOW)], "the time range is passed down to the database"


def test_code_filter_selects_by_code_not_by_words() -> None:
    naive = rejected(9, reading(NOW), reason="words that say nothing of the cause", code=RejectionCode.NAIVE_TIMESTAMP)
    store = FakeStore([FUTURE, GARBAGE, naive])

    summary, _ = run(store, Criteria(codes=frozenset({RejectionCode.NAIVE_TIMESTAMP, RejectionCode.NOT_JSON})))

    assert [rejected_id for rejected_id, _ in store.records] == [2, 9]
    assert summary.examined == 2


def test_limit_counts_examined_messages() -> None:
    messages = [rejected(n, reading(NOW - timedelta(minutes=n))) for n in range(1, 6)]
    store = FakeStore([rejected(0, b"x", reason="conflict: kept", code=RejectionCode.CONFLICT), *messages])

    summary, _ = run(store, Criteria(limit=2))

    assert [rejected_id for rejected_id, _ in store.records] == [1, 2]
    assert (summary.examined, summary.skipped) == (2, 1)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sensors/7/readings", "sensors/7/readings", True),
        ("sensors/7/readings", "sensors/70/readings", False),
        ("sensors/+/readings", "sensors/70/readings", True),
        ("sensors/+", "sensors/7/readings", False),
        ("sensors/#", "sensors/7/readings", True),
        ("sensors/#", "sensors", True),
        ("#", "anything/at/all", True),
        ("sensors/7/readings/extra", "sensors/7/readings", False),
    ],
)
def test_topic_matches_mqtt_filters(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
