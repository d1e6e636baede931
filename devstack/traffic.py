"""Known traffic for integration tests: readings, exact duplicates and invalid messages."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from devstack.processes import wait_until
from iotcommon.contract import reading_topic

BASE_AT = datetime(2026, 1, 1, tzinfo=UTC)
VARIABLES = (("temperature", "°C"), ("humidity", "%"), ("pressure", "hPa"), ("co2", "ppm"))

# One of each kind of bad input; {n} makes every payload unique.
_INVALID_TEMPLATES = (
    "not json {n}",
    '{{"sensor_id": {s}, "timestamp": "2026-01-01T00:00:00Z", "variable": "t", "value": "2{n}", "unit": "C"}}',
    '{{"sensor_id": {s}, "timestamp": "2026-01-01T00:00:{sec:02d}", "variable": "t", "value": {n}, "unit": "C"}}',
    '{{"sensor_id": {s}, "timestamp": "2026-01-01T00:00:00Z", "variable": "t", "value": NaN, "unit": "C{n}"}}',
    '{{"sensor_id": {s}, "timestamp": "2026-01-01T00:00:00Z", "variable": "t", "value": {n}}}',
    '{{"sensor_id": {other}, "timestamp": "2026-01-01T00:00:00Z", "variable": "t", "value": {n}, "unit": "C"}}',
    "\udcff\udcfe{n}",  # bytes 0xff 0xfe: not UTF-8
    "[{spaces}]",
)

Row = tuple[int, datetime, str, float, str]


@dataclass
class Traffic:
    """Messages to publish, in order, and what the database must hold afterwards."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    expected: set[Row] = field(default_factory=set)
    duplicates: int = 0
    invalid: int = 0
    rejected: set[tuple[str, bytes]] = field(default_factory=set)  # (topic, payload) of each invalid message


def reading(i: int, *, sensors: int = 50) -> tuple[str, bytes, Row]:
    """The i-th unique reading: its topic, payload and expected row."""
    sensor_id = i % sensors + 1
    variable, unit = VARIABLES[i % len(VARIABLES)]
    at = BASE_AT + timedelta(milliseconds=i, microseconds=i % 997)
    value = round(i * 0.25 - 100, 2)
    payload = {"sensor_id": sensor_id, "timestamp": at.isoformat(), "variable": variable, "value": value, "unit": unit}
    return reading_topic(sensor_id), json.dumps(payload).encode(), (sensor_id, at, variable, value, unit)


def invalid(n: int) -> tuple[str, bytes]:
    """The n-th invalid message (cycles through every kind of bad input; all payloads differ)."""
    sensor_id = n % 50 + 1
    template = _INVALID_TEMPLATES[n % len(_INVALID_TEMPLATES)]
    text = template.format(n=n, s=sensor_id, other=sensor_id + 1, sec=n % 60, spaces=" " * (n // 8))
    return reading_topic(sensor_id), text.encode("utf-8", "surrogateescape")


def build(total: int, *, duplicate_share: float = 0.0, invalid_share: float = 0.0, seed: int = 7,
          first: int = 0) -> Traffic:
    """`total` messages: unique readings, exact re-sends of some of them, and invalid ones, shuffled."""
    rng = random.Random(seed)
    traffic = Traffic(duplicates=round(total * duplicate_share), invalid=round(total * invalid_share))
    uniques = []
    for i in range(first, first + total - traffic.duplicates - traffic.invalid):
        topic, payload, row = reading(i)
        uniques.append((topic, payload))
        traffic.expected.add(row)
    traffic.messages = uniques + [rng.choice(uniques) for _ in range(traffic.duplicates)]
    invalids = [invalid(first + n) for n in range(traffic.invalid)]
    traffic.messages += invalids
    traffic.rejected = set(invalids)
    rng.shuffle(traffic.messages)
    return traffic


def stored_rows(admin_url: str) -> set[Row]:
    """Every row of `readings` as (sensor_id, timestamp, variable, value, unit)."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute('SELECT sensor_id, "timestamp", variable, value, unit FROM readings').fetchall()
    return {(int(r[0]), r[1], str(r[2]), float(r[3]), str(r[4])) for r in rows}


def rejected_messages(admin_url: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every row of `rejected_messages`."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute("SELECT topic, payload FROM rejected_messages").fetchall()
    return [(topic, bytes(payload)) for topic, payload in rows]


def counts(admin_url: str) -> tuple[int, int]:
    """(rows in readings, rows in rejected_messages)."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM rejected_messages)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_for_counts(admin_url: str, readings: int, rejected: int = 0, *, timeout: float = 60.0) -> None:
    """Poll until the tables hold at least `readings` readings and `rejected` rejected messages."""

    def arrived() -> bool:
        have_readings, have_rejected = counts(admin_url)
        return have_readings >= readings and have_rejected >= rejected

    wait_until(arrived, timeout, interval=0.2, message=f"{readings} readings and {rejected} rejected messages stored")


def assert_stored_exactly(admin_url: str, sent: Traffic, *, timeout: float = 90, redelivered: bool = False) -> None:
    """Wait until the tables hold what `sent` should leave, then check the exact sets, not just counts.

    Every unique valid reading stored once with its value, every invalid
    message rejected, nothing else. With `redelivered` (a fault cut the
    bridge's MQTT connection, so the broker sent unacknowledged messages
    again), an invalid message may be recorded more than once: the readings
    table is exactly-once by its key, rejected_messages is at-least-once
    (docs/reliability.md).
    """
    wait_for_counts(admin_url, len(sent.expected), sent.invalid, timeout=timeout)
    assert stored_rows(admin_url) == sent.expected
    rejected = rejected_messages(admin_url)
    assert set(rejected) == sent.rejected
    if not redelivered:
        assert len(rejected) == sent.invalid, "each invalid message recorded once"
