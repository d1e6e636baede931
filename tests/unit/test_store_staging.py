"""bridge.store.staging: a batch laid out for the database, and the raw bytes of each dead letter."""

from __future__ import annotations

import dataclasses
import json

import pytest
from fakes import T0

import bridge.model
from bridge.model import Delivery, Limits
from bridge.stats import Stats
from bridge.store.staging import Staged, WriteResult
from bridge.validation import parse_message
from iotcommon.contract import RejectionCode

TOPIC = "sensors/5/readings"


def received(payload: bytes, mid: int = 1) -> Delivery:
    return Delivery(mid, 1, 1, TOPIC, payload, T0, parse_message(TOPIC, payload, now=T0, limits=Limits()))


def reading(n: int) -> str:
    return json.dumps({"sensor_id": 5, "timestamp": T0.isoformat(), "variable": f"v{n}", "value": n, "unit": "C"})


def test_every_reading_of_a_valid_array_is_quoted_alone_and_the_array_is_split_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elements = [reading(n) for n in range(50)]
    array = received(("[" + ",\n ".join(elements) + "]").encode())
    single = received(reading(99).encode(), mid=2)
    assert not array.parsed.elements, "a valid array is validated whole, not split"
    splits: list[bytes] = []
    split = bridge.model.split_array

    def counted(payload: bytes) -> list[bytes]:
        splits.append(payload)
        return split(payload)

    monkeypatch.setattr(bridge.model, "split_array", counted)

    staged = Staged.of([array, single], client_id="w1")
    for seq in range(len(staged.rows)):
        staged.dead_letter(seq, RejectionCode.CONFLICT, f"conflict {seq}")

    assert [row[2] for row in staged.rejected] == [e.encode() for e in elements] + [single.payload]
    assert [row[4] for row in staged.rejected] == [f"conflict {seq}" for seq in range(51)]
    assert splits == [array.payload]


def test_a_committed_batch_adds_each_outcome_to_its_counter_and_no_other() -> None:
    result = WriteResult(stored=1, duplicates=2, conflicts=3, rejected=4, revised=5, stale=6)
    stats = Stats(received=7)

    result.add_to(stats)
    result.add_to(stats)

    expected = Stats(received=7, stored=2, duplicates=4, conflicts=6, rejected=8, revised=10, stale=12)
    assert dataclasses.asdict(stats) == dataclasses.asdict(expected)
    assert str(result) == "stored=1 duplicates=2 conflicts=3 rejected=4 revised=5 stale=6"
