"""Property tests of parse_message (hypothesis): any input has an outcome; the contract holds field by field."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.model import MAX_ARRAY_LEN, Limits, Parsed, Row
from bridge.validation import parse_message

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("sensor_id", "timestamp", "variable", "value", "unit")
CONTROL = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]

# --- strategies -------------------------------------------------------------------------------

sensor_ids = st.integers(1, 2_147_483_647)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# From a day after BRIDGE_MIN_TIMESTAMP's default to a day before NOW, so no offset can put the
# instant before the floor or past NOW + BRIDGE_MAX_FUTURE_S.
timestamps = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2020, 1, 2), max_value=datetime(2025, 12, 30, 23, 59, 59, 999_999)),
    offsets,
)
clean_chars = st.characters(exclude_categories=["Cs"], exclude_characters=CONTROL)
variables = st.text(clean_chars, min_size=1, max_size=64)
units = st.text(clean_chars, max_size=32)
values = st.floats(allow_nan=False, allow_infinity=False)


@dataclass(frozen=True)
class Valid:
    """A valid reading: its fields, and the JSON text a device sends."""

    row: Row
    text: str


@st.composite
def valid_readings(draw: st.DrawFn, sensor_id: int | None = None) -> Valid:
    """A reading the contract accepts, encoded with or without ASCII escapes."""
    row = Row(sensor_id or draw(sensor_ids), draw(timestamps), draw(variables), draw(values), draw(units))
    document = {"sensor_id": row.sensor_id, "timestamp": row.timestamp.isoformat(), "variable": row.variable,
                "value": row.value, "unit": row.unit}
    return Valid(row, json.dumps(document, ensure_ascii=draw(st.booleans())))


def raw(text: str) -> str:
    """Marks JSON text to put into a reading as is (NaN, 1e400, ...)."""
    return "\0raw:" + text


# Invalid values per field, as Python values (JSON-encoded) or raw() JSON text.
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "sensor_id": st.one_of(
        st.integers(max_value=0), st.integers(min_value=2**31, max_value=10**100), st.text(max_size=5),
        st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2),
    ),
    "timestamp": st.one_of(
        st.datetimes(max_value=datetime(9999, 1, 1)).map(datetime.isoformat),  # naive
        st.datetimes(min_value=datetime(2026, 1, 2), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)).map(
            datetime.isoformat),  # too far in the future
        st.text(alphabet="xyz :-", max_size=10), st.integers(), st.none(), st.booleans(),
    ),
    "variable": st.one_of(
        st.just(""), st.text(clean_chars, min_size=65, max_size=80),
        st.tuples(st.text(clean_chars, max_size=10), st.sampled_from(CONTROL), st.text(clean_chars, max_size=10)).map(
            "".join),
        st.integers(), st.none(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
    ),
    "value": st.one_of(
        st.floats().map(str), st.booleans(), st.none(), st.sampled_from([raw("NaN"), raw("Infinity"), raw("-1e400"),
                                                                          raw("1" + "0" * 400)]),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    "unit": st.one_of(
        st.text(clean_chars, min_size=33, max_size=50),
        st.tuples(st.text(clean_chars, max_size=10), st.sampled_from(CONTROL)).map("".join),
        st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False),
    ),
}
MISSING = object()


@st.composite
def mutated_readings(draw: st.DrawFn, sensor_id: int) -> tuple[str, str]:
    """(field, JSON text) of a valid reading for `sensor_id` with one field made invalid or left out."""
    reading = draw(valid_readings(sensor_id))
    field = draw(st.sampled_from(FIELDS))
    bad = MISSING if draw(st.integers(0, 7)) == 0 else draw(INVALID[field])
    document: dict[str, Any] = json.loads(reading.text)
    if bad is MISSING:
        del document[field]
        return field, json.dumps(document)
    document[field] = "\0placeholder"
    text = json.dumps(document)
    bad_text = bad.removeprefix("\0raw:") if isinstance(bad, str) and bad.startswith("\0raw:") else json.dumps(bad)
    return field, text.replace(json.dumps("\0placeholder"), bad_text)


def parse(topic: str, payload: bytes) -> Parsed:
    return parse_message(topic, payload, now=NOW, limits=LIMITS)


def same_row(actual: Row, expected: Row) -> bool:
    """Equal to the microsecond and offset, and the float bit for bit."""
    return (
        actual._replace(value=0.0) == expected._replace(value=0.0)
        and actual.timestamp.utcoffset() == expected.timestamp.utcoffset()
        and struct.pack("<d", actual.value) == struct.pack("<d", expected.value)
    )


def assert_one_outcome(payload: bytes, parsed: Parsed) -> None:
    """Rows or rejections, never neither; a message rejected whole keeps all its bytes."""
    assert parsed.rows or parsed.rejections
    assert len(parsed.rows) == len(parsed.indexes)
    assert len(parsed.rows) + len(parsed.rejections) <= MAX_ARRAY_LEN
    for rejection in parsed.rejections:
        assert rejection.reason
        assert rejection.payload in payload
    if len(parsed.rejections) == 1 and not parsed.rows and not parsed.rejections[0].reason.startswith("element "):
        assert parsed.rejections[0].payload == payload


# --- (a) anything in, an outcome out ----------------------------------------------------------

topics = st.one_of(
    st.text(max_size=40),
    st.integers(-5, 10**12).map(lambda n: f"sensors/{n}/readings"),
    st.from_regex(r"sensors/[0-9a-z٣]{0,12}/readings\n?", fullmatch=True),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from([*FIELDS, "x"]) | st.text(max_size=4), children, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(topic=topics, payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_have_one_outcome(topic: str, payload: bytes) -> None:
    assert_one_outcome(payload, parse(topic, payload))


@FUZZ
@given(document=json_values, sensor_id=st.integers(1, 99), as_array=st.booleans())
def test_arbitrary_json_never_raises_and_has_one_outcome(document: Any, sensor_id: int, as_array: bool) -> None:
    payload = json.dumps([document] if as_array else document).encode()
    assert_one_outcome(payload, parse(f"sensors/{sensor_id}/readings", payload))


# --- (b) valid readings are stored exactly --------------------------------------------------------

@FUZZ
@given(reading=valid_readings())
def test_valid_reading_is_accepted_with_values_exact(reading: Valid) -> None:
    parsed = parse(f"sensors/{reading.row.sensor_id}/readings", reading.text.encode())
    assert parsed.rejections == ()
    assert parsed.indexes == (0,)
    assert same_row(parsed.rows[0], reading.row), (parsed.rows[0], reading.row)


@FUZZ
@given(data=st.data(), sensor_id=sensor_ids, count=st.integers(1, 8))
def test_array_of_valid_readings_is_accepted_in_order(data: st.DataObject, sensor_id: int, count: int) -> None:
    readings = [data.draw(valid_readings(sensor_id)) for _ in range(count)]
    payload = ("[" + ", ".join(r.text for r in readings) + "]").encode()
    parsed = parse(f"sensors/{sensor_id}/readings", payload)
    assert parsed.rejections == ()
    assert parsed.indexes == tuple(range(count))
    assert all(same_row(a, r.row) for a, r in zip(parsed.rows, readings, strict=True))


# --- (c) one bad field: rejected, and the reason names it -------------------------------------------

@FUZZ
@given(data=st.data(), sensor_id=sensor_ids)
def test_one_invalid_field_is_rejected_naming_the_field(data: st.DataObject, sensor_id: int) -> None:
    field, text = data.draw(mutated_readings(sensor_id))
    payload = text.encode()
    parsed = parse(f"sensors/{sensor_id}/readings", payload)
    assert parsed.rows == ()
    assert len(parsed.rejections) == 1
    assert parsed.rejections[0].payload == payload
    assert parsed.rejections[0].reason.startswith(f"{field}: "), (parsed.rejections[0].reason, text)


# --- (d) mixed arrays: the valid elements stored, each bad one rejected with its own bytes --------------

@FUZZ
@given(data=st.data(), sensor_id=sensor_ids, kinds=st.lists(st.sampled_from("vvmj"), min_size=1, max_size=12))
def test_mixed_array_stores_valid_elements_and_rejects_each_bad_one(
    data: st.DataObject, sensor_id: int, kinds: list[str]
) -> None:
    elements: list[tuple[str, str | None, Row | None]] = []  # (text, bad field or None, row)
    for kind in kinds:
        if kind == "v":
            reading = data.draw(valid_readings(sensor_id))
            elements.append((reading.text, None, reading.row))
        elif kind == "m":
            field, text = data.draw(mutated_readings(sensor_id))
            elements.append((text, field, None))
        else:
            elements.append((json.dumps(data.draw(st.none() | st.integers() | st.text(max_size=5))), "", None))
    separator = data.draw(st.sampled_from([",", ", ", " ,\n\t"]))
    payload = ("[" + separator.join(text for text, _, _ in elements) + "]").encode()

    parsed = parse(f"sensors/{sensor_id}/readings", payload)

    valid = [(i, row) for i, (_, _, row) in enumerate(elements) if row is not None]
    assert parsed.indexes == tuple(i for i, _ in valid)
    assert all(same_row(a, row) for a, (_, row) in zip(parsed.rows, valid, strict=True))
    invalid = [(i, text, field) for i, (text, field, row) in enumerate(elements) if row is None]
    assert len(parsed.rejections) == len(invalid)
    for rejection, (i, text, bad_field) in zip(parsed.rejections, invalid, strict=True):
        assert rejection.payload == text.encode()
        prefix = f"element {i}: " + (f"{bad_field}: " if bad_field else "")
        assert rejection.reason.startswith(prefix), (rejection.reason, prefix)
