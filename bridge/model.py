"""The message contract: turn one MQTT message into readings and rejections.

Pure functions, no I/O. The common case (a valid message) is parsed and
validated in one pass by pydantic-core; only a message that fails takes the
slower path that finds out which array element failed and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_ARRAY_LEN = 1000
_TOPIC = re.compile(r"sensors/([^/]+)/readings")  # used with fullmatch: "$" would allow a trailing newline
_WHITESPACE = " \t\n\r"


# Checked by pydantic-core's own regex engine: a Python validator would cost a
# call per field per reading. describe() words the failure for humans.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
_CONTROL_RULE = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"


class Reading(BaseModel):
    """One sensor reading as the contract defines it; nothing is coerced."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    sensor_id: Annotated[int, Field(ge=1, le=2_147_483_647)]
    timestamp: AwareDatetime
    variable: Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_CONTROL)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: Annotated[str, Field(max_length=32, pattern=_NO_CONTROL)]


class Row(NamedTuple):
    """A valid reading in the column order of the readings table."""

    sensor_id: int
    timestamp: datetime
    variable: str
    value: float
    unit: str


class Rejection(NamedTuple):
    """Raw bytes the bridge refused, and why (names the field and the rule)."""

    payload: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable bounds of the contract."""

    max_payload_bytes: int = 65_536
    max_future_s: int = 300


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message turned into: rows (with their array index) and rejections."""

    rows: tuple[Row, ...] = ()
    indexes: tuple[int, ...] = ()
    rejections: tuple[Rejection, ...] = ()


# The validators themselves: TypeAdapter.validate_json adds a Python call per message.
_ONE = TypeAdapter(Reading).validator
_MANY = TypeAdapter(list[Reading]).validator
_BLANK = _WHITESPACE.encode()


def parse_message(topic: str, payload: bytes, *, now: datetime, limits: Limits) -> Parsed:
    """Validate one MQTT message against the contract (see README, "Message contract")."""
    problem = _check_envelope(topic, payload, limits)
    if problem:
        return _reject(payload, problem)
    topic_sensor_id = int(topic.split("/")[1])
    latest = now + timedelta(seconds=limits.max_future_s)
    if payload[:1] == b"[" or (payload[:1] in _BLANK and payload.lstrip(_BLANK)[:1] == b"["):
        return _parse_array(payload, topic_sensor_id, latest, limits)
    return _parse_object(payload, topic_sensor_id, latest, limits)


def _parse_object(payload: bytes, topic_sensor_id: int, latest: datetime, limits: Limits) -> Parsed:
    try:
        reading = _ONE.validate_json(payload)
    except ValidationError as exc:
        return _reject(payload, _json_problem(payload) or describe(exc))
    problem = _check_reading(reading, topic_sensor_id, latest, limits)
    return _reject(payload, problem) if problem else Parsed((_row(reading),), (0,))


def _parse_array(payload: bytes, topic_sensor_id: int, latest: datetime, limits: Limits) -> Parsed:
    try:
        readings = _MANY.validate_json(payload)
    except ValidationError as exc:
        if _is_json_error(exc):
            return _reject(payload, _json_problem(payload) or describe(exc))
        return _parse_elements(payload, topic_sensor_id, latest, limits)
    if not 1 <= len(readings) <= MAX_ARRAY_LEN:
        return _reject(payload, _array_length_problem(len(readings)))
    if any(_check_reading(r, topic_sensor_id, latest, limits) for r in readings):
        return _parse_elements(payload, topic_sensor_id, latest, limits)
    return Parsed(tuple(_row(r) for r in readings), tuple(range(len(readings))))


def split_array(payload: bytes) -> list[bytes]:
    """The raw bytes of each element of a JSON array; ValueError when it is not one."""
    text = payload.decode("utf-8")
    decoder = json.JSONDecoder()
    index = _skip_ws(text, 0)
    if text[index : index + 1] != "[":
        raise ValueError("not a JSON array")
    index = _skip_ws(text, index + 1)
    elements: list[bytes] = []
    if text[index : index + 1] == "]":
        return elements
    while True:
        _, end = decoder.raw_decode(text, index)
        elements.append(text[index:end].encode("utf-8"))
        index = _skip_ws(text, end)
        separator = text[index : index + 1]
        index = _skip_ws(text, index + 1)
        if separator == "]":
            return elements
        if separator != ",":
            raise ValueError(f"expected ',' or ']' at character {index}")


def describe(exc: ValidationError, *, subject: str = "payload") -> str:
    """A one-line reason from pydantic's errors: the field, the rule and the bad input."""
    parts: list[str] = []
    for error in exc.errors(include_url=False)[:5]:
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
    return "; ".join(parts)


def _check_envelope(topic: str, payload: bytes, limits: Limits) -> str | None:
    match = _TOPIC.fullmatch(topic)
    if not match:
        return f"topic: {topic!r} does not match sensors/<sensor_id>/readings"
    segment = match.group(1)
    # The length check comes first: int() refuses strings of over 4300 digits.
    if len(segment) > 10 or not segment.isascii() or not segment.isdigit() or str(int(segment)) != segment:
        return f"topic: sensor id {_show(segment)} is not a positive integer in plain decimal form"
    if not payload or payload.isspace():
        return "payload is empty"
    if len(payload) > limits.max_payload_bytes:
        return (
            f"payload is {len(payload)} bytes; the limit is "
            f"BRIDGE_MAX_PAYLOAD_BYTES={limits.max_payload_bytes}"
        )
    return None


def _json_problem(payload: bytes) -> str | None:
    """Bad UTF-8 explained in its own words; checked only once pydantic refused the payload."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}"
    return None


def _check_reading(reading: Reading, topic_sensor_id: int, latest: datetime, limits: Limits) -> str | None:
    """The rules pydantic cannot know: the topic's sensor id, and `latest` = now + BRIDGE_MAX_FUTURE_S."""
    if reading.sensor_id != topic_sensor_id:
        return f"sensor_id: {reading.sensor_id} does not match the topic's sensor id {topic_sensor_id}"
    if reading.timestamp > latest:
        ahead = reading.timestamp - latest + timedelta(seconds=limits.max_future_s)
        return (
            f"timestamp: {reading.timestamp.isoformat()} is {ahead.total_seconds():.0f} s in the "
            f"future; the limit is BRIDGE_MAX_FUTURE_S={limits.max_future_s}"
        )
    return None


def _parse_elements(payload: bytes, topic_sensor_id: int, latest: datetime, limits: Limits) -> Parsed:
    """The slow path for an array with bad elements: judge each element on its own."""
    try:
        elements = split_array(payload)
    except (ValueError, RecursionError) as exc:
        return _reject(payload, f"payload is not valid JSON: {exc}")
    if not 1 <= len(elements) <= MAX_ARRAY_LEN:
        return _reject(payload, _array_length_problem(len(elements)))
    rows: list[Row] = []
    indexes: list[int] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(elements):
        try:
            reading = _ONE.validate_json(raw)
        except ValidationError as exc:
            rejections.append(Rejection(raw, f"element {index}: {describe(exc, subject='')}"))
            continue
        problem = _check_reading(reading, topic_sensor_id, latest, limits)
        if problem:
            rejections.append(Rejection(raw, f"element {index}: {problem}"))
        else:
            rows.append(_row(reading))
            indexes.append(index)
    return Parsed(tuple(rows), tuple(indexes), tuple(rejections))


def _array_length_problem(length: int) -> str:
    if length == 0:
        return "payload is an empty array; send at least one reading"
    return f"payload is an array of {length} readings; the limit is {MAX_ARRAY_LEN}"


def _is_json_error(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))


def _reject(payload: bytes, reason: str) -> Parsed:
    return Parsed(rejections=(Rejection(payload, reason),))


def _row(reading: Reading) -> Row:
    return Row(reading.sensor_id, reading.timestamp, reading.variable, reading.value, reading.unit)


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
