"""The message contract's values: a reading, a row, a rejection, what a message turned into, a delivery.

bridge/validation.py turns an MQTT message into these; the sink stores them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from iotcommon.contract import RejectionCode

MAX_ARRAY_LEN = 1000
MAX_REVISION = 2_147_483_647  # readings.revision is an integer column
# BRIDGE_MIN_TIMESTAMP's default (README, "Configuration"): after the epochs a clock that was
# never set falls back to (1970 for Unix, 1980 for GPS, 2000 for many RTCs, 1999 after the 2019
# GPS week rollover), before any backlog a device could still be sending.
MIN_TIMESTAMP = datetime(2020, 1, 1, tzinfo=UTC)
WHITESPACE = b" \t\n\r"  # JSON's


# Checked by pydantic-core's own regex engine: a Python validator would cost a
# call per field per reading. validation.describe() words the failure for humans.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"


class Reading(BaseModel):
    """One sensor reading as the contract defines it; nothing is coerced."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    sensor_id: Annotated[int, Field(ge=1, le=2_147_483_647)]
    timestamp: AwareDatetime
    variable: Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_CONTROL)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: Annotated[str, Field(max_length=32, pattern=_NO_CONTROL)]
    # Optional: a device that never corrects a reading never sends it (README, "Corrections").
    revision: Annotated[int, Field(ge=0, le=MAX_REVISION)] = 0


class Row(NamedTuple):
    """A valid reading in the column order of the readings table."""

    sensor_id: int
    timestamp: datetime
    variable: str
    value: float
    unit: str
    revision: int = 0


class Rejection(NamedTuple):
    """Raw bytes the bridge refused: the code of the cause, and a sentence naming the field and the rule."""

    payload: bytes
    code: RejectionCode
    reason: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable bounds of the contract."""

    max_payload_bytes: int = 65_536
    max_future_s: int = 300
    min_timestamp: datetime = MIN_TIMESTAMP


class Parsed(NamedTuple):
    """What one message turned into: rows (with their array index) and rejections.

    A NamedTuple, like Delivery: one of each is built per message on the
    network thread, where a frozen dataclass's __init__ costs three times more.

    `elements` holds the raw bytes of each array element when validation had
    to split the array (an array with a bad element); a valid array is
    validated whole, without splitting it, and Delivery.raw_readings splits
    it only if one of its readings must be quoted (a conflict).
    """

    rows: tuple[Row, ...] = ()
    indexes: tuple[int, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    elements: tuple[bytes, ...] = ()


class Delivery(NamedTuple):
    """One received MQTT message, validated, waiting to be stored and acknowledged."""

    mid: int
    qos: int
    generation: int  # which connection it arrived on; acks never cross connections
    topic: str
    payload: bytes
    received_at: datetime
    parsed: Parsed

    def raw_readings(self) -> Sequence[bytes]:
        """The raw bytes of each reading, by array position (the whole payload for a single object)."""
        if self.parsed.elements:
            return self.parsed.elements
        if self.payload.lstrip(WHITESPACE)[:1] == b"[":
            return split_array(self.payload)
        return (self.payload,)


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


_TEXT_WHITESPACE = WHITESPACE.decode()


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in _TEXT_WHITESPACE:
        index += 1
    return index
