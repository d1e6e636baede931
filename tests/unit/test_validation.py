"""bridge.validation: the message contract (README, "Message contract"), one case per rule and per kind of bad input.

The values it builds and split_array are bridge.model's: tests/unit/test_model.py.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.model import MAX_ARRAY_LEN, Limits, Parsed, Row
from bridge.validation import parse_message
from iotcommon.contract import RejectionCode

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TOPIC = "sensors/5/readings"
LIMITS = Limits()
FIELDS = ("sensor_id", "timestamp", "variable", "value", "unit")
_MISSING = object()
_RAW = "__raw__"


def reading(**overrides: Any) -> dict[str, Any]:
    """A valid reading for sensor 5; pass field=_MISSING to leave a field out."""
    fields: dict[str, Any] = {
        "sensor_id": 5,
        "timestamp": "2024-05-01T11:59:00Z",
        "variable": "temperature",
        "value": 21.5,
        "unit": "C",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not _MISSING}


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def with_raw(field: str, raw_json: str, **overrides: Any) -> bytes:
    """A reading whose `field` holds JSON text json.dumps cannot write (NaN, 1e400, escapes)."""
    text = encode(reading(**{field: _RAW}, **overrides)).decode()
    return text.replace(json.dumps(_RAW), raw_json).encode()


def parse(payload: bytes, topic: str = TOPIC, *, limits: Limits = LIMITS, now: datetime = NOW) -> Parsed:
    return parse_message(topic, payload, now=now, limits=limits)


def only_reason(parsed: Parsed, payload: bytes) -> str:
    """The reason of a message rejected as a whole (no rows, one rejection holding all its bytes)."""
    assert parsed.rows == ()
    assert parsed.indexes == ()
    assert len(parsed.rejections) == 1, parsed.rejections
    assert parsed.rejections[0].payload == payload
    return parsed.rejections[0].reason


# --- valid messages ---------------------------------------------------------------------------


def test_single_object_gives_one_row() -> None:
    parsed = parse(encode(reading()))

    assert parsed.rows == (Row(5, datetime(2024, 5, 1, 11, 59, tzinfo=UTC), "temperature", 21.5, "C"),)
    assert parsed.indexes == (0,)
    assert parsed.rejections == ()


def test_array_gives_one_row_per_element_with_its_index() -> None:
    elements = [reading(variable=f"v{i}", value=i) for i in range(3)]

    parsed = parse(encode(elements))

    assert [row.variable for row in parsed.rows] == ["v0", "v1", "v2"]
    assert [row.value for row in parsed.rows] == [0.0, 1.0, 2.0]
    assert parsed.indexes == (0, 1, 2)
    assert parsed.rejections == ()


def test_array_of_exactly_max_len_is_accepted() -> None:
    payload = encode([reading(variable=f"v{i}") for i in range(MAX_ARRAY_LEN)])

    parsed = parse(payload, limits=Limits(max_payload_bytes=len(payload)))

    assert len(parsed.rows) == MAX_ARRAY_LEN
    assert parsed.indexes == tuple(range(MAX_ARRAY_LEN))


def test_microseconds_are_kept() -> None:
    parsed = parse(encode(reading(timestamp="2024-05-01T11:59:00.123456Z")))

    assert parsed.rows[0].timestamp == datetime(2024, 5, 1, 11, 59, 0, 123456, tzinfo=UTC)
    assert parsed.rows[0].timestamp.microsecond == 123456


@pytest.mark.parametrize(
    ("timestamp", "utc"),
    [
        ("2024-05-01T11:30:00.5Z", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T11:30:00.5+00:00", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T12:30:00.5+01:00", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T06:00:00.5-05:30", datetime(2024, 5, 1, 11, 30, 0, 500000, tzinfo=UTC)),
    ],
)
def test_utc_offset_is_honoured(timestamp: str, utc: datetime) -> None:
    parsed = parse(encode(reading(timestamp=timestamp)))

    stored = parsed.rows[0].timestamp
    assert stored == utc
    assert stored.astimezone(UTC).isoformat() == utc.isoformat()


def test_extra_fields_are_ignored() -> None:
    extra = reading(battery=97, meta={"firmware": [1, 2, 3]}, note=None)

    assert parse(encode(extra)).rows == parse(encode(reading())).rows
    assert parse(encode(extra)).rejections == ()


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"sensor_id": 1}, "sensor_id", 1),
        ({"sensor_id": 2_147_483_647}, "sensor_id", 2_147_483_647),
        ({"variable": "v" * 64}, "variable", "v" * 64),
        ({"variable": "température °C ✓"}, "variable", "température °C ✓"),
        ({"unit": "u" * 32}, "unit", "u" * 32),
        ({"unit": ""}, "unit", ""),
        ({"value": 21}, "value", 21.0),
        ({"value": -0.5}, "value", -0.5),
        ({"value": 1.7976931348623157e308}, "value", 1.7976931348623157e308),
    ],
)
def test_boundary_values_are_accepted(overrides: dict[str, Any], field: str, expected: Any) -> None:
    sensor_id = overrides.get("sensor_id", 5)

    parsed = parse(encode(reading(**overrides)), f"sensors/{sensor_id}/readings")

    assert parsed.rejections == ()
    assert getattr(parsed.rows[0], field) == expected


def test_value_is_a_float() -> None:
    assert type(parse(encode(reading(value=21))).rows[0].value) is float


# --- whole payload refused --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b'{"sensor_id": 5, "value": ', "not valid JSON", id="truncated"),
        pytest.param(b"sensor_id=5 value=21.5", "not valid JSON", id="not-json"),
        pytest.param(b"{'sensor_id': 5}", "not valid JSON", id="single-quotes"),
        pytest.param(b'{"sensor_id": 5} trailing', "not valid JSON", id="trailing-garbage"),
        pytest.param(b'[{"sensor_id": 5}, ', "not valid JSON", id="truncated-array"),
        pytest.param(b'{"variable": "caf\xe9"}', "UTF-8", id="latin-1"),
        pytest.param(b'{"variable": "\xff\xfe"}', "UTF-8", id="invalid-utf8"),
        pytest.param(b'{"variable": "\xed\xa0\x80"}', "UTF-8", id="encoded-surrogate"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b" \n\t\r ", "empty", id="whitespace-only"),
        pytest.param(b"[]", "empty array", id="empty-array"),
        pytest.param(b" [ \n ] ", "empty array", id="empty-array-spaced"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "not valid JSON", id="deeply-nested-array"),
        pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, "not valid JSON", id="deeply-nested-object"),
        pytest.param(
            b'[{"sensor_id": 5, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}]",
            "not valid JSON",
            id="deeply-nested-element",
        ),
        pytest.param(b"42", "JSON object", id="number"),
        pytest.param(b'"reading"', "JSON object", id="string"),
        pytest.param(b"null", "JSON object", id="null"),
        pytest.param(b"true", "JSON object", id="bool"),
    ],
)
def test_bad_payload_is_rejected_whole(payload: bytes, expected: str) -> None:
    reason = only_reason(parse(payload), payload)

    assert expected in reason


def test_payload_over_max_payload_bytes_is_rejected() -> None:
    limits = Limits(max_payload_bytes=256)
    exact = _padded_to(256)
    over = _padded_to(257)

    assert parse(exact, limits=limits).rejections == ()
    reason = only_reason(parse(over, limits=limits), over)
    assert "257 bytes" in reason
    assert "BRIDGE_MAX_PAYLOAD_BYTES=256" in reason


def test_size_limit_is_checked_before_parsing() -> None:
    payload = b"\xff" * 300  # neither UTF-8 nor JSON: the size alone decides

    reason = only_reason(parse(payload, limits=Limits(max_payload_bytes=256)), payload)

    assert "BRIDGE_MAX_PAYLOAD_BYTES" in reason


@pytest.mark.parametrize("bad_element", [False, True], ids=["all-valid", "one-invalid"])
def test_array_longer_than_max_len_is_rejected_whole(bad_element: bool) -> None:
    elements = [reading(variable=f"v{i}") for i in range(MAX_ARRAY_LEN + 1)]
    if bad_element:
        elements[3]["value"] = "oops"
    payload = encode(elements)

    reason = only_reason(parse(payload, limits=Limits(max_payload_bytes=len(payload))), payload)

    assert f"array of {MAX_ARRAY_LEN + 1} readings" in reason
    assert str(MAX_ARRAY_LEN) in reason


def test_array_longer_than_max_len_of_non_objects_is_rejected_whole() -> None:
    payload = encode([1] * (MAX_ARRAY_LEN + 1))

    assert "readings; the limit is" in only_reason(parse(payload), payload)


# --- one field at a time ----------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
def test_missing_field_is_named(field: str) -> None:
    payload = encode(reading(**{field: _MISSING}))

    reason = only_reason(parse(payload), payload)

    assert reason.startswith(f"{field}:")
    assert "required" in reason


@pytest.mark.parametrize(
    ("field", "raw_json", "expected"),
    [
        pytest.param("sensor_id", "true", "integer", id="sensor_id-bool"),
        pytest.param("sensor_id", "5.0", "integer", id="sensor_id-float"),
        pytest.param("sensor_id", '"5"', "integer", id="sensor_id-string"),
        pytest.param("sensor_id", "null", "integer", id="sensor_id-null"),
        pytest.param("sensor_id", "0", "greater than or equal to 1", id="sensor_id-zero"),
        pytest.param("sensor_id", "-5", "greater than or equal to 1", id="sensor_id-negative"),
        pytest.param("sensor_id", "2147483648", "2147483647", id="sensor_id-over-int32"),
        pytest.param("timestamp", "1714564800", "datetime", id="timestamp-number"),
        pytest.param("timestamp", '"2024-05-01T11:59:00"', "timezone", id="timestamp-naive"),
        pytest.param("timestamp", '"yesterday noon"', "datetime", id="timestamp-unparseable"),
        pytest.param("timestamp", '"2024-05-01"', "datetime", id="timestamp-date-only"),
        pytest.param("timestamp", '"2024-13-01T11:59:00Z"', "datetime", id="timestamp-month-13"),
        pytest.param("timestamp", "null", "datetime", id="timestamp-null"),
        pytest.param("variable", '""', "at least 1 character", id="variable-empty"),
        pytest.param("variable", json.dumps("v" * 65), "at most 64 characters", id="variable-65-chars"),
        pytest.param("variable", "7", "string", id="variable-number"),
        pytest.param("variable", '["t"]', "string", id="variable-list"),
        pytest.param("variable", '"a\\u0000b"', "control characters", id="variable-nul"),
        pytest.param("variable", '"a\\u0007b"', "control characters", id="variable-bell"),
        pytest.param("variable", '"a\\u009fb"', "control characters", id="variable-c1"),
        pytest.param("variable", '"a\\nb"', "control characters", id="variable-newline"),
        pytest.param("value", "true", "number", id="value-bool"),
        pytest.param("value", '"21.5"', "number", id="value-string"),
        pytest.param("value", "null", "number", id="value-null"),
        pytest.param("value", "NaN", "finite", id="value-nan"),
        pytest.param("value", "Infinity", "finite", id="value-infinity"),
        pytest.param("value", "-Infinity", "finite", id="value-minus-infinity"),
        pytest.param("value", "1e400", "finite", id="value-overflow"),
        pytest.param("value", "-1e400", "finite", id="value-negative-overflow"),
        pytest.param("unit", json.dumps("u" * 33), "at most 32 characters", id="unit-33-chars"),
        pytest.param("unit", "1", "string", id="unit-number"),
        pytest.param("unit", "null", "string", id="unit-null"),
        pytest.param("unit", '"\\u0007C"', "control characters", id="unit-bell"),
        pytest.param("unit", '"C\\u0000"', "control characters", id="unit-nul"),
    ],
)
def test_mistyped_field_is_named(field: str, raw_json: str, expected: str) -> None:
    payload = with_raw(field, raw_json)

    reason = only_reason(parse(payload), payload)

    assert reason.startswith(f"{field}:"), reason
    assert expected in reason


def test_raw_c1_control_character_in_utf8_is_rejected() -> None:
    payload = encode(reading(variable="_")).replace(b'"_"', b'"a\xc2\x85b"')  # U+0085 written raw

    assert "control characters" in only_reason(parse(payload), payload)


def test_every_bad_field_is_named() -> None:
    payload = encode({"sensor_id": "5", "timestamp": 0, "variable": "", "value": "x", "unit": 7})

    reason = only_reason(parse(payload), payload)

    for field in FIELDS:
        assert f"{field}:" in reason


def test_reason_stays_short_for_a_huge_bad_value() -> None:
    payload = encode(reading(variable="v" * 20_000))

    reason = only_reason(parse(payload), payload)

    assert reason.startswith("variable:")
    assert len(reason) < 300


# --- future timestamps ------------------------------------------------------------------------


def test_timestamp_at_max_future_is_accepted() -> None:
    at_limit = (NOW + timedelta(seconds=300)).isoformat()

    parsed = parse(encode(reading(timestamp=at_limit)), limits=Limits(max_future_s=300))

    assert parsed.rejections == ()
    assert parsed.rows[0].timestamp == NOW + timedelta(seconds=300)


def test_timestamp_just_past_max_future_is_rejected() -> None:
    just_over = (NOW + timedelta(seconds=300, microseconds=1)).isoformat()
    payload = encode(reading(timestamp=just_over))

    reason = only_reason(parse(payload, limits=Limits(max_future_s=300)), payload)

    assert reason.startswith("timestamp:")
    assert "future" in reason
    assert "BRIDGE_MAX_FUTURE_S=300" in reason


def test_future_limit_applies_after_offset_conversion() -> None:
    # 12:04:00+00:00 written as 13:04:00+01:00: within the limit despite the later wall clock.
    assert parse(encode(reading(timestamp="2024-05-01T13:04:00+01:00"))).rejections == ()
    # 12:06:00+00:00 written as 07:06:00-05:00: beyond it despite the earlier wall clock.
    late = encode(reading(timestamp="2024-05-01T07:06:00-05:00"))
    assert "future" in only_reason(parse(late), late)


def test_past_timestamps_down_to_the_floor_are_accepted() -> None:
    parsed = parse(encode(reading(timestamp="2020-01-01T00:00:00Z")))

    assert parsed.rows[0].timestamp == datetime(2020, 1, 1, tzinfo=UTC)


def test_timestamp_before_the_floor_is_past_timestamp_naming_the_bound() -> None:
    payload = encode(reading(timestamp="2019-12-31T23:59:59.999999Z"))

    parsed = parse(payload)

    assert [rejection.code for rejection in parsed.rejections] == [RejectionCode.PAST_TIMESTAMP]
    reason = only_reason(parsed, payload)
    assert reason.startswith("timestamp: 2019-12-31T23:59:59.999999+00:00 is before")
    assert "BRIDGE_MIN_TIMESTAMP=2020-01-01T00:00:00+00:00" in reason


def test_floor_applies_after_offset_conversion_and_follows_the_setting() -> None:
    # 2020-01-01T00:30:00+01:00 is 2019-12-31T23:30:00Z: before the floor despite its date.
    early = encode(reading(timestamp="2020-01-01T00:30:00+01:00"))
    assert "BRIDGE_MIN_TIMESTAMP" in only_reason(parse(early), early)
    unix_epoch = encode(reading(timestamp="1970-01-01T00:00:00Z"))
    assert parse(unix_epoch, limits=Limits(min_timestamp=datetime(1970, 1, 1, tzinfo=UTC))).rejections == ()


# --- topic ------------------------------------------------------------------------------------


def test_topic_and_payload_sensor_id_must_match() -> None:
    payload = encode(reading(sensor_id=6))

    reason = only_reason(parse(payload, "sensors/5/readings"), payload)

    assert reason.startswith("sensor_id:")
    assert "topic" in reason


@pytest.mark.parametrize(
    "topic",
    [
        "sensors/5",
        "sensors/5/readings/extra",
        "sensor/5/readings",
        "sensors//readings",
        "/sensors/5/readings",
        "sensors/5/reading",
        "sensors/abc/readings",
        "sensors/5a/readings",
        "sensors/07/readings",
        "sensors/-5/readings",
        "sensors/+5/readings",
        "sensors/ 5/readings",
        "sensors/5.0/readings",
        "sensors/\u0665/readings",  # ARABIC-INDIC DIGIT FIVE: str.isdigit() says yes
        "sensors/5/readings\n",
    ],
)
def test_bad_topic_is_rejected(topic: str) -> None:
    payload = encode(reading())

    reason = only_reason(parse(payload, topic), payload)

    assert reason.startswith("topic:")


def test_overlong_numeric_topic_segment_is_rejected_not_raised() -> None:
    # int() refuses strings of more than 4300 digits (CVE-2020-10735 limit); an MQTT topic may be 64 KiB.
    topic = f"sensors/{'9' * 5000}/readings"
    payload = encode(reading())

    reason = only_reason(parse(payload, topic), payload)

    assert reason.startswith("topic:")


@pytest.mark.parametrize("sensor_id", ["0", "2147483648"])
def test_topic_sensor_id_outside_range_never_yields_rows(sensor_id: str) -> None:
    for candidate in (0, 1, 5, 2_147_483_647, 2_147_483_648):
        parsed = parse(encode(reading(sensor_id=candidate)), f"sensors/{sensor_id}/readings")
        assert parsed.rows == ()
        assert len(parsed.rejections) == 1


# --- arrays with bad elements -----------------------------------------------------------------


def test_mixed_array_keeps_valid_rows_and_rejects_each_bad_element_with_its_own_bytes() -> None:
    elements = [
        encode(reading(variable="good0")),
        with_raw("value", "NaN", variable="bad1"),
        encode(reading(variable="good2", value=3)),
        encode(reading(variable="bad3", timestamp="2024-05-01T13:00:00Z")),
        b'{ "sensor_id" : 6 ,\n "timestamp": "2024-05-01T11:00:00Z", "variable": "bad4", "value": 1, "unit": "" }',
        encode(reading(variable="bad5", unit=_MISSING)),
        encode(reading(variable="good6", unit="\u00b0C")),
        encode(reading(variable="bad7", value="1.5")),
    ]
    payload = b"  [\n  " + b" ,\n\t".join(elements) + b"\r\n]  "

    parsed = parse(payload)

    assert [row.variable for row in parsed.rows] == ["good0", "good2", "good6"]
    assert parsed.indexes == (0, 2, 6)
    expected = {1: "value:", 3: "timestamp:", 4: "sensor_id:", 5: "unit:", 7: "value:"}
    assert [rejection.payload for rejection in parsed.rejections] == [elements[i] for i in expected]
    for rejection, (index, field) in zip(parsed.rejections, expected.items(), strict=True):
        assert rejection.reason.startswith(f"element {index}: {field}"), rejection.reason
        assert rejection.payload in payload


def test_non_object_elements_are_rejected_each() -> None:
    elements = [encode(reading()), b"1", b'"reading"', b"null", b"[]", b"true", b"[{}]"]
    payload = b"[" + b", ".join(elements) + b"]"

    parsed = parse(payload)

    assert parsed.indexes == (0,)
    assert [rejection.payload for rejection in parsed.rejections] == elements[1:]
    for index, rejection in enumerate(parsed.rejections, start=1):
        assert rejection.reason.startswith(f"element {index}:")
        assert "JSON object" in rejection.reason


def test_array_where_every_element_is_bad_rejects_each() -> None:
    elements = [encode(reading(variable=f"v{i}", value=None)) for i in range(3)]

    parsed = parse(b"[" + b",".join(elements) + b"]")

    assert parsed.rows == ()
    assert [r.payload for r in parsed.rejections] == elements
    assert [r.reason.split(":")[0] for r in parsed.rejections] == ["element 0", "element 1", "element 2"]


def test_element_with_mismatched_sensor_id_is_rejected_alone() -> None:
    elements = [encode(reading(variable="a")), encode(reading(variable="b", sensor_id=6))]

    parsed = parse(b"[" + b",".join(elements) + b"]")

    assert parsed.indexes == (0,)
    assert parsed.rejections[0].payload == elements[1]
    assert parsed.rejections[0].reason.startswith("element 1: sensor_id:")


def test_multibyte_elements_keep_their_exact_bytes() -> None:
    elements = [
        encode(reading(variable="h\u00e9")).replace(b"\\u00e9", "\u00e9".encode()),
        with_raw("unit", '"\u00b0\U0001f321\\u0007"', variable="\u6e29\u5ea6").replace(
            b"\\u6e29\\u5ea6", "\u6e29\u5ea6".encode()
        ),
    ]
    payload = b"[" + b",".join(elements) + b"]"

    parsed = parse(payload)

    assert parsed.indexes == (0,)
    assert parsed.rejections[0].payload == elements[1]
    assert parsed.rejections[0].reason.startswith("element 1: unit:")


def test_array_that_cannot_be_split_is_rejected_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-core and the json module disagree on some inputs (nesting depth, number size);
    # whatever split_array cannot handle must end up as a rejection, not an exception.
    def refuse(payload: bytes) -> list[bytes]:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("bridge.validation.split_array", refuse)
    payload = encode([reading(), reading(value="bad")])

    reason = only_reason(parse(payload), payload)

    assert "not valid JSON" in reason


# --- property: every message gives something, and arrays give a verdict per element -----------

_BAD_RAW = {
    "sensor_id": ["true", "5.0", '"5"', "0", "2147483648", "-1", "6"],
    "timestamp": ["0", '"2024-05-01T11:00:00"', '"noon"', '"2024-05-01"', '"2024-05-01T12:10:00Z"'],
    "variable": ['""', json.dumps("v" * 65), "1", '"a\\u0000"', '"\\u009f"'],
    "value": ["true", '"1.5"', "null", "NaN", "Infinity", "-Infinity", "1e400", "[]"],
    "unit": [json.dumps("u" * 33), "0", '"\\u0007"'],
}


def _random_element(rng: random.Random) -> tuple[bytes, bool]:
    """A raw array element and whether the contract accepts it."""
    roll = rng.random()
    if roll < 0.5:
        offset = rng.choice(["Z", "+00:00", "+02:00", "-07:30"])
        hours = {"Z": 11, "+00:00": 11, "+02:00": 13, "-07:30": 3}[offset]
        stamp = f"2024-05-01T{hours:02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}"
        fields = reading(variable=f"v{rng.randrange(1000)}", value=rng.uniform(-1e6, 1e6), timestamp=stamp + offset)
        return encode(fields), True
    if roll < 0.8:
        field = rng.choice(FIELDS)
        return with_raw(field, rng.choice(_BAD_RAW[field])), False
    if roll < 0.9:
        return encode(reading(**{rng.choice(FIELDS): _MISSING})), False
    return rng.choice([b"1", b'"x"', b"null", b"[]", b"false"]), False


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    alphabet = b' \t\n[]{},:"0123456789.eE+-nultrfaseNI\\\x00\xff\xc3'
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        position = rng.randrange(len(data))
        action = rng.randrange(3)
        if action == 0:
            data[position] = rng.choice(alphabet)
        elif action == 1:
            del data[position]
        else:
            data.insert(position, rng.choice(alphabet))
    return bytes(data)


def test_property_each_message_gives_rows_or_rejections() -> None:
    rng = random.Random(20240501)
    for _ in range(1000):
        count = rng.randint(1, 12)
        elements = [_random_element(rng) for _ in range(count)]
        spaces = [rng.choice([b"", b" ", b"\n\t", b"  \r\n"]) for _ in range(4)]
        payload = spaces[0] + b"[" + spaces[1] + (spaces[2] + b"," + spaces[3]).join(e for e, _ in elements) + b"]"

        parsed = parse(payload)

        valid = tuple(i for i, (_, ok) in enumerate(elements) if ok)
        assert parsed.indexes == valid, payload
        assert len(parsed.rows) == len(valid)
        assert [r.payload for r in parsed.rejections] == [e for e, ok in elements if not ok]
        assert all(r.reason.startswith("element ") for r in parsed.rejections)

        if count == 1:
            single, ok = elements[0]
            alone = parse(single)
            assert (len(alone.rows), len(alone.rejections)) == ((1, 0) if ok else (0, 1)), single

        mutated = _mutate(rng, payload)
        parsed = parse(mutated)
        assert parsed.rows or parsed.rejections, mutated
        assert len(parsed.rows) == len(parsed.indexes)
        assert list(parsed.indexes) == sorted(set(parsed.indexes))
        for rejection in parsed.rejections:
            assert rejection.payload in mutated
            assert rejection.reason


def _padded_to(size: int) -> bytes:
    """A valid single reading of exactly `size` bytes (an ignored field takes up the slack)."""
    bare = encode(reading(pad=""))
    payload = encode(reading(pad="x" * (size - len(bare))))
    assert len(payload) == size
    return payload
