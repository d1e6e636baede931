"""bridge.store.unplaced and the no-partition error: exactly the readings no partition holds become dead letters."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
from fakes import T0

from bridge.errors import SinkRefused
from bridge.model import Delivery, Limits
from bridge.pipeline import _as_refused
from bridge.store.database import is_no_partition, translate
from bridge.store.unplaced import set_aside
from bridge.validation import parse_message
from iotcommon.contract import RejectionCode

TOPIC = "sensors/5/readings"
EARLY = T0 - timedelta(days=30)


def received(body: Any, mid: int = 1) -> Delivery:
    payload = json.dumps(body).encode()
    return Delivery(mid, 1, 1, TOPIC, payload, T0, parse_message(TOPIC, payload, now=T0, limits=Limits()))


def reading(n: int, at: Any = T0) -> dict[str, Any]:
    return {"sensor_id": 5, "timestamp": at.isoformat(), "variable": f"v{n}", "value": n, "unit": "C"}


def test_only_the_unplaced_elements_of_an_array_become_dead_letters_with_their_own_bytes() -> None:
    batch = [received([reading(0), reading(1, EARLY), reading(2)]), received(reading(3), mid=2)]

    moved = set_aside(batch, {EARLY})

    assert [row.variable for row in moved[0].parsed.rows] == ["v0", "v2"]
    assert moved[0].parsed.indexes == (0, 2)
    [rejection] = moved[0].parsed.rejections
    assert rejection.code is RejectionCode.NO_PARTITION
    assert json.loads(rejection.payload) == reading(1, EARLY)
    assert rejection.reason.startswith(f"element 1: timestamp: no partition of readings holds {EARLY.isoformat()}")
    assert moved[1] is batch[1], "a delivery with nothing to move is the same delivery"
    assert [d.mid for d in moved] == [1, 2], "the batch keeps its messages and their order, so its acks"


def test_a_single_unplaced_reading_is_its_whole_message_without_an_element_prefix() -> None:
    [moved] = set_aside([received(reading(0, EARLY))], {EARLY})

    assert moved.parsed.rows == ()
    assert moved.parsed.rejections[0].payload == moved.payload
    assert moved.parsed.rejections[0].reason.startswith("timestamp: no partition of readings")


class _Diag:
    def __init__(self, constraint_name: str | None) -> None:
        self.constraint_name = constraint_name


class _CheckViolation(psycopg.errors.CheckViolation):
    """A CheckViolation as the server sends it, with or without a constraint name."""

    def __init__(self, message: str, constraint_name: str | None) -> None:
        super().__init__(message)
        self._fake_diag = _Diag(constraint_name)

    @property
    def diag(self) -> Any:
        return self._fake_diag

    @property
    def sqlstate(self) -> str | None:  # type: ignore[override]
        return "23514"


def test_no_partition_is_told_from_a_check_constraint_by_the_missing_constraint_name() -> None:
    no_partition = _CheckViolation('no partition of relation "readings" found for row', None)
    check = _CheckViolation('violates check constraint "readings_sensor_id_check"', "readings_sensor_id_check")

    assert is_no_partition(no_partition) and not is_no_partition(check)
    assert translate(no_partition).code is RejectionCode.NO_PARTITION  # type: ignore[attr-defined]
    assert translate(check).code is RejectionCode.DATABASE_REFUSED  # type: ignore[attr-defined]


def test_a_message_refused_alone_is_dead_lettered_with_the_refusals_code() -> None:
    delivery = received(reading(0))

    refused = _as_refused(delivery, SinkRefused("no partition of relation", code=RejectionCode.NO_PARTITION))

    assert [r.code for r in refused.parsed.rejections] == [RejectionCode.NO_PARTITION]
    assert refused.parsed.rows == ()
