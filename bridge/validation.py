"""Validation: turn one MQTT message into readings and rejections, each rejection with its code.

Pure functions, no I/O. The common case (a valid message) is parsed and
validated in one pass by pydantic-core; only a message that fails takes the
slower path that finds out which array element failed and why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bridge.model import MAX_ARRAY_LEN, WHITESPACE, Limits, Parsed, Reading, Rejection, Row, split_array
from iotcommon.contract import RejectionCode, topic_sensor_segment

_CONTROL_RULE = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"

# The validators themselves: TypeAdapter.validate_json adds a Python call per message.
_ONE = TypeAdapter(Reading).validator
_MANY = TypeAdapter(list[Reading]).validator


def parse_message(topic: str, payload: bytes, *, now: datetime, limits: Limits) -> Parsed:
    """Validate one MQTT message against the contract (see README, "Message contract")."""
    problem = _check_envelope(topic, payload, limits)
    if problem:
        return _reject(payload, *problem)
    topic_sensor_id = int(topic.split("/")[1])
    bounds = _bounds(now, limits)
    if payload[:1] == b"[" or (payload[:1] in WHITESPACE and payload.lstrip(WHITESPACE)[:1] == b"["):
        return _parse_array(payload, topic_sensor_id, bounds, limits)
    return _parse_object(payload, topic_sensor_id, bounds, limits)


def _parse_object(payload: bytes, topic_sensor_id: int, bounds: Bounds, limits: Limits) -> Parsed:
    try:
        reading = _ONE.validate_json(payload)
    except ValidationError as exc:
        return _reject(payload, *(_json_problem(payload) or describe(exc)))
    problem = _check_reading(reading, topic_sensor_id, bounds, limits)
    return _reject(payload, *problem) if problem else Parsed((_row(reading),), (0,))


def _parse_array(payload: bytes, topic_sensor_id: int, bounds: Bounds, limits: Limits) -> Parsed:
    try:
        readings = _MANY.validate_json(payload)
    except ValidationError as exc:
        if _is_json_error(exc):
            return _reject(payload, *(_json_problem(payload) or describe(exc)))
        return _parse_elements(payload, topic_sensor_id, bounds, limits)
    if not 1 <= len(readings) <= MAX_ARRAY_LEN:
        return _reject(payload, *_array_length_problem(len(readings)))
    if any(_check_reading(r, topic_sensor_id, bounds, limits) for r in readings):
        return _parse_elements(payload, topic_sensor_id, bounds, limits)
    return Parsed(tuple(_row(r) for r in readings), tuple(range(len(readings))))


# pydantic-core's error types, by the rejection code they mean (strict mode: nothing is coerced).
_CODES = {
    "json_invalid": RejectionCode.NOT_JSON,
    "missing": RejectionCode.MISSING_FIELD,
    "model_type": RejectionCode.NOT_OBJECT_OR_ARRAY,
    "model_attributes_type": RejectionCode.NOT_OBJECT_OR_ARRAY,
    "finite_number": RejectionCode.NOT_FINITE,
    "string_pattern_mismatch": RejectionCode.INVALID_TEXT,
    "timezone_aware": RejectionCode.NAIVE_TIMESTAMP,
    "datetime_parsing": RejectionCode.BAD_TIMESTAMP,
    "datetime_from_date_parsing": RejectionCode.BAD_TIMESTAMP,
    "datetime_object_invalid": RejectionCode.BAD_TIMESTAMP,
    "greater_than_equal": RejectionCode.OUT_OF_RANGE,
    "less_than_equal": RejectionCode.OUT_OF_RANGE,
    "string_too_short": RejectionCode.OUT_OF_RANGE,
    "string_too_long": RejectionCode.OUT_OF_RANGE,
}


def code_of(error_type: str) -> RejectionCode:
    """The rejection code of a pydantic error type; type errors (a string for a number ...) are wrong_type."""
    return _CODES.get(error_type, RejectionCode.WRONG_TYPE)


def describe(exc: ValidationError, *, subject: str = "payload") -> tuple[RejectionCode, str]:
    """The code of the first error, and a one-line reason from pydantic's errors: the field, the rule, the input."""
    errors = exc.errors(include_url=False)
    parts: list[str] = []
    for error in errors[:5]:
        if error["type"] == "json_invalid":
            parts.append(f"payload is not valid JSON: {error['msg'].removeprefix('Invalid JSON: ')}")
            continue
        field = ".".join(str(part) for part in error["loc"]) or subject
        prefix = f"{field}: " if field else ""
        message = _CONTROL_RULE if error["type"] == "string_pattern_mismatch" else error["msg"]
        if error["type"] == "missing":
            parts.append(f"{prefix}is required")
        elif error["type"] in ("model_type", "model_attributes_type"):
            parts.append(f"{prefix}must be a JSON object (got {_show(error['input'])})")
        else:
            parts.append(f"{prefix}{message} (got {_show(error['input'])})")
    return code_of(errors[0]["type"]), "; ".join(parts)


Problem = tuple[RejectionCode, str]
Bounds = tuple[datetime, datetime]  # (earliest, latest) timestamp accepted


# Comparing two aware datetimes whose tzinfo objects differ calls utcoffset() on
# both, which costs more than validating the message; pydantic-core gives every
# "...Z" timestamp the same UTC tzinfo object, so the latest allowed time carries
# that one, and the comparison of the common case is a plain one. (Any other
# offset still compares correctly, the slower way.)
_PYDANTIC_UTC = _ONE.validate_json(
    b'{"sensor_id": 1, "timestamp": "2000-01-01T00:00:00Z", "variable": "v", "value": 0, "unit": ""}'
).timestamp.tzinfo
_bounds_cache: tuple[datetime, Limits, Bounds] | None = None  # (now, limits, bounds): a read's messages share now


def _bounds(now: datetime, limits: Limits) -> Bounds:
    """(BRIDGE_MIN_TIMESTAMP, now + max_future_s), in pydantic's UTC tzinfo; computed again when `now` changes."""
    global _bounds_cache  # noqa: PLW0603 - a one-entry cache of the network thread
    cached = _bounds_cache
    if cached is not None and cached[0] is now and cached[1] is limits:
        return cached[2]
    latest = (now + timedelta(seconds=limits.max_future_s)).astimezone(UTC).replace(tzinfo=_PYDANTIC_UTC)
    earliest = limits.min_timestamp.astimezone(UTC).replace(tzinfo=_PYDANTIC_UTC)
    _bounds_cache = (now, limits, (earliest, latest))
    return earliest, latest


def _check_envelope(topic: str, payload: bytes, limits: Limits) -> Problem | None:
    segment = topic_sensor_segment(topic)
    if segment is None:
        return RejectionCode.BAD_TOPIC, f"topic: {topic!r} does not match sensors/<sensor_id>/readings"
    # The length check comes first: int() refuses strings of over 4300 digits.
    if len(segment) > 10 or not segment.isascii() or not segment.isdigit() or str(int(segment)) != segment:
        return RejectionCode.BAD_TOPIC, (
            f"topic: sensor id {_show(segment)} is not a positive integer in plain decimal form"
        )
    if not payload or payload.isspace():
        return RejectionCode.EMPTY_PAYLOAD, "payload is empty"
    if len(payload) > limits.max_payload_bytes:
        return RejectionCode.PAYLOAD_TOO_LARGE, (
            f"payload is {len(payload)} bytes; the limit is "
            f"BRIDGE_MAX_PAYLOAD_BYTES={limits.max_payload_bytes}"
        )
    return None


def _json_problem(payload: bytes) -> Problem | None:
    """Bad UTF-8 explained in its own words; checked only once pydantic refused the payload."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectionCode.NOT_UTF8, f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}"
    return None


def _check_reading(reading: Reading, topic_sensor_id: int, bounds: Bounds, limits: Limits) -> Problem | None:
    """The rules pydantic cannot know: the topic's sensor id, and the time bounds (earliest, now + max future)."""
    if reading.sensor_id != topic_sensor_id:
        return RejectionCode.TOPIC_MISMATCH, (
            f"sensor_id: {reading.sensor_id} does not match the topic's sensor id {topic_sensor_id}"
        )
    earliest, latest = bounds
    if reading.timestamp > latest:
        ahead = reading.timestamp - latest + timedelta(seconds=limits.max_future_s)
        return RejectionCode.FUTURE_TIMESTAMP, (
            f"timestamp: {reading.timestamp.isoformat()} is {ahead.total_seconds():.0f} s in the "
            f"future; the limit is BRIDGE_MAX_FUTURE_S={limits.max_future_s}"
        )
    if reading.timestamp < earliest:
        return RejectionCode.PAST_TIMESTAMP, (
            f"timestamp: {reading.timestamp.isoformat()} is before the earliest accepted, "
            f"BRIDGE_MIN_TIMESTAMP={limits.min_timestamp.isoformat()} (a device clock that was never set?)"
        )
    return None


def _parse_elements(payload: bytes, topic_sensor_id: int, bounds: Bounds, limits: Limits) -> Parsed:
    """The slow path for an array with bad elements: judge each element on its own."""
    try:
        elements = split_array(payload)
    except (ValueError, RecursionError) as exc:
        return _reject(payload, RejectionCode.NOT_JSON, f"payload is not valid JSON: {exc}")
    if not 1 <= len(elements) <= MAX_ARRAY_LEN:
        return _reject(payload, *_array_length_problem(len(elements)))
    rows: list[Row] = []
    indexes: list[int] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(elements):
        try:
            reading = _ONE.validate_json(raw)
        except ValidationError as exc:
            code, reason = describe(exc, subject="")
            rejections.append(Rejection(raw, code, f"element {index}: {reason}"))
            continue
        problem = _check_reading(reading, topic_sensor_id, bounds, limits)
        if problem:
            rejections.append(Rejection(raw, problem[0], f"element {index}: {problem[1]}"))
        else:
            rows.append(_row(reading))
            indexes.append(index)
    return Parsed(tuple(rows), tuple(indexes), tuple(rejections), tuple(elements))


def _array_length_problem(length: int) -> Problem:
    if length == 0:
        return RejectionCode.EMPTY_ARRAY, "payload is an empty array; send at least one reading"
    return RejectionCode.ARRAY_TOO_LONG, f"payload is an array of {length} readings; the limit is {MAX_ARRAY_LEN}"


def _is_json_error(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))


def _reject(payload: bytes, code: RejectionCode, reason: str) -> Parsed:
    return Parsed(rejections=(Rejection(payload, code, reason),))


def _row(reading: Reading) -> Row:
    return Row(reading.sensor_id, reading.timestamp, reading.variable, reading.value, reading.unit, reading.revision)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
