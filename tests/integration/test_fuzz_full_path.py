"""Hostile and random messages through a real worker: each ends as exactly the expected rows or rejections.

The corpus (tests/corpus) and a few hundred seeded-random messages are
published to a real broker and stored by a real `python -m bridge` worker.
Every message has its own topic (its own sensor id), so the rows and dead
letters it caused can be told apart from the others'. What each message must
become is what parse_message says (tests/unit/test_corpus.py and
test_fuzz_validation.py check parse_message against the contract itself); this test
checks that the worker stores exactly that, survives, and keeps its memory flat.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from corpus import make_corpus

from bridge.model import Limits
from bridge.validation import parse_message
from devstack import traffic
from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.processes import memory_kb, wait_until
from devstack.workers import StartWorker, WorkerProcess
from iotcommon.contract import reading_topic

FUZZ_MESSAGES = 400
FIRST_FUZZ_SENSOR_ID = 910_001
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_RSS_KB = 120 * 1024
MAX_RSS_GROWTH_KB = 4608  # over the last two passes of the same messages; measured growth is about 0-3 MB
Message = tuple[str, bytes]


def fuzz_messages(count: int, seed: int) -> list[Message]:
    """`count` seeded-random messages: valid readings and arrays, one-field mutations, mixed arrays, junk."""
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        sensor_id = FIRST_FUZZ_SENSOR_ID + n
        kind = rng.choice(("valid", "array", "mutated", "mixed", "bytes", "json"))
        if kind == "valid":
            payload = random_reading(rng, sensor_id, 0).encode()
        elif kind == "array":
            readings = [random_reading(rng, sensor_id, i) for i in range(rng.randint(1, 6))]
            payload = ("[" + ", ".join(readings) + "]").encode()
        elif kind == "mutated":
            payload = mutate(rng, random_reading(rng, sensor_id, 0)).encode()
        elif kind == "mixed":
            elements = [
                rng.choice((random_reading(rng, sensor_id, i), mutate(rng, random_reading(rng, sensor_id, i)), "7"))
                for i in range(rng.randint(1, 8))
            ]
            payload = ("[" + ",".join(elements) + "]").encode()
        elif kind == "bytes":
            payload = rng.randbytes(rng.randint(1, 200))
        else:
            mangled = bytearray(random_reading(rng, sensor_id, 0).encode())
            for _ in range(rng.randint(1, 3)):  # flip, drop or insert a byte
                at = rng.randrange(len(mangled))
                mangled[at : at + rng.randint(0, 1)] = bytes([rng.randrange(256)]) * rng.randint(0, 1)
            payload = bytes(mangled)
        messages.append((reading_topic(sensor_id), payload))
    return messages


def random_reading(rng: random.Random, sensor_id: int, index: int) -> str:
    """A valid reading whose variable is unique within its message."""
    offset = timezone(timedelta(minutes=rng.randint(-23 * 60 - 59, 23 * 60 + 59)))
    at = datetime(2025, 1, 1, tzinfo=offset) + timedelta(microseconds=rng.randrange(300 * 86_400 * 10**6))
    value = rng.choice((rng.uniform(-1e6, 1e6), struct.unpack("<d", rng.randbytes(8))[0], -0.0, 5e-324))
    if value != value or value in (float("inf"), float("-inf")):
        value = 1.0
    variable = f"v{index}" + "".join(rng.choice("aé😀 ;'\"\\-") for _ in range(rng.randint(0, 20)))
    unit = "".join(rng.choice("C%°µ'\"") for _ in range(rng.randint(0, 10)))
    document = {"sensor_id": sensor_id, "timestamp": at.isoformat(), "variable": variable, "value": value,
                "unit": unit}
    return json.dumps(document, ensure_ascii=rng.random() < 0.5)


def mutate(rng: random.Random, text: str) -> str:
    """The reading with one field replaced by an invalid value or removed."""
    document: dict[str, Any] = json.loads(text)
    field = rng.choice(list(document))
    bad = {
        "sensor_id": ("1", 0, -3, 2**31, True, 1.0, None),
        "timestamp": ("2025-01-01T00:00:00", "2099-01-01T00:00:00Z", 1_700_000_000, "soon", None),
        "variable": ("", "x" * 65, "a\nb", "\x00", 5, None),
        "value": ("1.5", True, None, [1.5], {"v": 1}),
        "unit": ("u" * 33, "\x7f", "\x9f", 1, False),
    }[field]
    if rng.random() < 0.15:
        del document[field]
    else:
        document[field] = rng.choice(bad)
    return json.dumps(document)


def expected_outcome(messages: list[Message]) -> tuple[set[tuple[Any, ...]], Counter[Message]]:
    """(rows as the database shows them, Counter of (topic, rejected bytes)) by parse_message."""
    now = datetime.now(UTC)
    rows: set[tuple[Any, ...]] = set()
    rejected: Counter[Message] = Counter()
    for topic, payload in messages:
        parsed = parse_message(topic, payload, now=now, limits=Limits())
        rows.update(
            (r.sensor_id, (r.timestamp - EPOCH) // timedelta(microseconds=1), r.variable, struct.pack(">d", r.value),
             r.unit, r.revision)
            for r in parsed.rows
        )
        rejected.update((topic, rejection.payload) for rejection in parsed.rejections)
    return rows, rejected


def stored(admin_url: str) -> tuple[set[tuple[Any, ...]], Counter[Message], list[tuple[str, str, str]]]:
    """(readings with exact microseconds and float bits, Counter of (topic, payload), [(topic, reason, code)])."""
    with psycopg.connect(admin_url) as conn:
        readings = conn.execute(
            'SELECT sensor_id, (extract(epoch FROM "timestamp") * 1000000)::bigint, variable, float8send(value), unit, '
            "revision FROM readings"
        ).fetchall()
        rejected = conn.execute("SELECT topic, payload, reason, reason_code FROM rejected_messages").fetchall()
    rows = {(s, t, v, bytes(bits), u, r) for s, t, v, bits, u, r in readings}
    counted = Counter((topic, bytes(payload)) for topic, payload, _, _ in rejected)
    return rows, counted, [(t, r, c) for t, _, r, c in rejected]


def publish_and_wait(client: MqttTestClient, admin_url: str, messages: list[Message],
                     total: tuple[int, int], worker: WorkerProcess) -> None:
    """Publish, then poll until the tables hold `total` (readings, rejected) rows."""
    client.publish_many(messages)

    def done() -> bool:
        assert worker.is_running(), f"worker exited with {worker.wait(0)}:\n{worker.log_tail()}"
        return traffic.counts(admin_url) >= total

    wait_until(done, 30, interval=0.1, message=f"{total} (readings, rejected) stored")


@pytest.fixture
def worker(start_worker: StartWorker, share_group: str) -> WorkerProcess:
    """One worker with a client id unique to this test (broker sessions outlive tests)."""
    return start_worker(f"fuzz-{share_group}")


def test_hostile_and_random_messages_end_as_exactly_the_expected_rows(
    worker: WorkerProcess, mqtt_client: MqttTestClient, mqtt_url: str, admin_database_url: str, tmp_path: Path
) -> None:
    corpus = list(make_corpus.load(tmp_path))
    refused = [(e["topic"], payload) for e, payload in corpus if e.get("broker_refuses")]
    messages = [(e["topic"], payload) for e, payload in corpus if not e.get("broker_refuses")]
    messages += fuzz_messages(FUZZ_MESSAGES, seed=20261129)
    random.Random(6).shuffle(messages)
    rows, rejected = expected_outcome(messages)
    rss_at_start = memory_kb(worker.pid)
    # Every message four times: the first passes pay each kind of message's first-use cost (a
    # large payload grows buffers once; the allocator settles over two passes, measured 62.9, 66.4,
    # 68.5, 69.5, 69.5 MB over five), the last two, the very same messages, show whether memory
    # keeps growing (a worker keeping 4x each payload grew 3.3 MB a pass). A reading sent again is
    # a duplicate; an invalid message is a message of its own and is stored again, with the same
    # outcome (one worker: the same order).
    passes = 4
    rss_after = []
    for n in range(1, passes + 1):
        total = (len(rows), n * sum(rejected.values()))
        publish_and_wait(mqtt_client, admin_database_url, messages, total, worker)
        rss_after.append(memory_kb(worker.pid))
    rejected = Counter({message: passes * count for message, count in rejected.items()})

    # Over the broker's max_packet_size: the broker drops the publisher, the bridge never sees it.
    # A valid reading published afterwards, once stored, shows the worker is still consuming.
    assert len(refused) == 2
    with MqttTestClient.from_url(mqtt_url) as big, pytest.raises(MqttTestError):
        big.publish_many(refused, timeout=3)
    sentinel = (reading_topic(FIRST_FUZZ_SENSOR_ID - 1),
                random_reading(random.Random(1), FIRST_FUZZ_SENSOR_ID - 1, 0).encode())
    rows |= expected_outcome([sentinel])[0]
    publish_and_wait(mqtt_client, admin_database_url, [sentinel], (len(rows), sum(rejected.values())), worker)

    stored_rows, stored_rejected, reasons = stored(admin_database_url)
    assert stored_rows == rows
    assert stored_rejected == rejected
    assert not [r for _, r, _ in reasons if "internal error" in r], "parse_message raised in the worker"
    by_topic: dict[str, list[tuple[str, str]]] = {}
    for topic, reason, code in reasons:
        by_topic.setdefault(topic, []).append((reason, code))
    for entry, _ in corpus:
        got = by_topic.get(entry["topic"], [])
        assert len(got) == (0 if entry.get("broker_refuses") else passes * entry["rejected"]), entry["name"]
        for expected, code in zip(entry["reasons"], entry["codes"], strict=True) if got else []:
            assert any(expected in reason and stored_code == code for reason, stored_code in got), (
                entry["name"], expected, code, got)
    assert any("DROP TABLE" in row[2] for row in stored_rows), "SQL text stored verbatim, the table still there"
    assert worker.is_running(), f"worker exited:\n{worker.log_tail()}"
    assert max(rss_after) < MAX_RSS_KB, (rss_at_start, rss_after)
    assert rss_after[-1] - rss_after[-3] < MAX_RSS_GROWTH_KB, (rss_at_start, rss_after)
    print(f"worker RSS kB: start {rss_at_start}, after each pass {rss_after}")
