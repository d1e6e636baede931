"""What the simulator publishes: a deterministic plan of unique, duplicate and invalid messages."""

from __future__ import annotations

import json
import math
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from iotcommon.contract import reading_topic

RUN_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class Variable:
    """A measured quantity with its unit and a plausible indoor range."""

    name: str
    unit: str
    base: float
    spread: float
    decimals: int


VARIABLES = (
    Variable("temperature", "°C", 21.0, 4.0, 2),
    Variable("humidity", "%", 45.0, 15.0, 1),
    Variable("pressure", "hPa", 1013.0, 8.0, 1),
    Variable("co2", "ppm", 600.0, 300.0, 0),
    Variable("pm2_5", "µg/m³", 12.0, 8.0, 1),
    Variable("illuminance", "lx", 300.0, 250.0, 0),
    Variable("noise", "dB", 45.0, 10.0, 1),
    Variable("voc", "ppb", 150.0, 100.0, 0),
)


class Kind(Enum):
    """What one planned message is."""

    UNIQUE = "unique"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


Key = tuple[int, datetime, str]


@dataclass(frozen=True, slots=True)
class Expected:
    """A reading the database must hold after the run."""

    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message ready to publish, and the readings it carries (none for an invalid one)."""

    index: int
    kind: Kind
    topic: str
    payload: bytes
    readings: tuple[tuple[Key, Expected], ...] = ()


def plan_kinds(messages: int, *, duplicates: float, invalid: float, seed: int) -> list[Kind]:
    """The kind of each message: exactly round(F * messages) of each mixed-in kind, shuffled.

    A duplicate re-sends an earlier unique message, so the first message is
    always unique (the shuffle is repaired by one swap if needed).
    """
    n_dup, n_bad = round(messages * duplicates), round(messages * invalid)
    if messages > 0 and n_dup + n_bad >= messages:
        raise ValueError("--duplicates + --invalid must leave at least one unique message")
    kinds = [Kind.DUPLICATE] * n_dup + [Kind.INVALID] * n_bad
    kinds += [Kind.UNIQUE] * (messages - len(kinds))
    random.Random(seed).shuffle(kinds)  # noqa: S311 - reproducible on purpose (--seed), not security
    first_unique = kinds.index(Kind.UNIQUE) if kinds else 0
    first_dup = kinds.index(Kind.DUPLICATE) if Kind.DUPLICATE in kinds else messages
    if first_dup < first_unique:
        kinds[first_dup], kinds[first_unique] = kinds[first_unique], kinds[first_dup]
    return kinds


def variable_name(variable: Variable, run_id: str) -> str:
    """The variable as stored: the quantity's name tagged with the run, e.g. temperature#r1a2b3c4.

    The tag makes a run's rows findable on a shared database without
    breaking the contract (a variable is any 1-64 character string).
    """
    return f"{variable.name}#{run_id}"


class MessageFactory:
    """Builds the planned messages one at a time, stamping readings with the current time.

    Every reading gets its own timestamp (at least 1 µs after the previous
    one), so the natural keys of a run never collide.
    """

    def __init__(
        self, kinds: list[Kind], *, sensors: int, array: int, run_id: str, seed: int,
        first_sensor: int = 1,
    ) -> None:
        self._kinds = kinds
        self._sensors = sensors
        self._first_sensor = first_sensor
        self._array = array
        self._run_id = run_id
        self._rng = random.Random(seed + 1)  # noqa: S311 - reproducible on purpose (--seed)
        self._uniques: list[Message] = []
        self._last_at = datetime(1970, 1, 1, tzinfo=UTC)
        self._reading_count = 0

    def __len__(self) -> int:
        return len(self._kinds)

    @property
    def marker(self) -> str:
        """Text contained in every payload of this run (finds its rejected messages)."""
        return f"#{self._run_id}"

    def build(self, index: int, now: Callable[[], datetime]) -> Message:
        """The index-th message; call in order, once each."""
        kind = self._kinds[index]
        sensor_id = self._first_sensor + index % self._sensors
        if kind is Kind.DUPLICATE:
            original = self._rng.choice(self._uniques)
            return Message(index, kind, original.topic, original.payload)
        if kind is Kind.INVALID:
            return Message(index, kind, reading_topic(sensor_id), self._invalid(index, sensor_id, now()))
        message = self._unique(index, sensor_id, now())
        self._uniques.append(message)
        return message

    def _next_at(self, now: datetime) -> datetime:
        at = max(now, self._last_at + timedelta(microseconds=1))
        self._last_at = at
        return at

    def _unique(self, index: int, sensor_id: int, now: datetime) -> Message:
        objects, readings = [], []
        for _ in range(self._array):
            variable = VARIABLES[(self._reading_count // self._sensors) % len(VARIABLES)]
            value = self._value(variable, self._reading_count)
            self._reading_count += 1
            at = self._next_at(now)
            name = variable_name(variable, self._run_id)
            objects.append(
                {"sensor_id": sensor_id, "timestamp": _iso(at), "variable": name, "value": value, "unit": variable.unit}
            )
            readings.append(((sensor_id, at, name), Expected(value, variable.unit)))
        body = objects[0] if self._array == 1 else objects
        payload = json.dumps(body, ensure_ascii=False).encode()
        return Message(index, Kind.UNIQUE, reading_topic(sensor_id), payload, tuple(readings))

    def _value(self, variable: Variable, n: int) -> float:
        # A slow daily-like wave plus noise: plausible, and varied enough to
        # make a stored value that does not match the sent one stand out.
        wave = math.sin(n / 500.0)
        noise = self._rng.uniform(-0.1, 0.1)
        return round(variable.base + variable.spread * (wave + noise), variable.decimals)

    def _invalid(self, index: int, sensor_id: int, now: datetime) -> bytes:
        """One of several contract violations; every one carries the run marker."""
        at = _iso(self._next_at(now))
        name = f"temperature{self.marker}"
        good = {"sensor_id": sensor_id, "timestamp": at, "variable": name, "value": 21.5, "unit": "°C"}
        variants: list[object] = [
            {**good, "value": "21.5"},  # a string is not a number
            {k: v for k, v in good.items() if k != "unit"},  # unit is required
            {**good, "timestamp": at.removesuffix("Z")},  # naive timestamp
            {**good, "sensor_id": sensor_id + 1_000_000},  # does not match the topic
            {**good, "value": None},  # null is not a number
        ]
        choice = index % (len(variants) + 1)
        if choice == len(variants):
            return f"not json {self.marker} {index}".encode()
        return json.dumps(variants[choice], ensure_ascii=False).encode()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id() -> str:
    """A short random run id (letters and digits, so it needs no escaping in SQL LIKE)."""
    return "r" + "".join(secrets.choice(RUN_ID_CHARS) for _ in range(7))
