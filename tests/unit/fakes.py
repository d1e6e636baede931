"""Fakes shared by the unit tests: a clock that moves only when told, deliveries made to order, paho delivering.

Importable (`from fakes import FakeClock`) for type annotations; tests/unit/conftest.py
hands them out as fixtures. A fake used by one test module only stays in that module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt

from bridge.model import Delivery, Parsed, Rejection, Row
from iotcommon.contract import Heartbeat, RejectionCode

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds `t` and wall-clock `now()` = T0 + t, moving only on sleep(), advance() or each read.

    `step_s` moves it on at every monotonic() or now() read, so loops polling a
    deadline get there in a few turns. sleep() records its argument and runs
    `on_sleep`, so a test can make something happen while the code under test waits.
    """

    def __init__(
        self, *, start_s: float = 0.0, step_s: float = 0.0, start_at: datetime = T0, max_sleeps: int | None = 1000
    ) -> None:
        self.t = start_s
        self.max_sleeps = max_sleeps  # a retry loop that never gives up fails the test instead of hanging it
        self.step_s = step_s
        self.start_at = start_at
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] = lambda seconds: None

    def monotonic(self) -> float:
        self.t += self.step_s
        return self.t

    def now(self) -> datetime:
        self.t += self.step_s
        return self.start_at + timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> None:
        assert self.max_sleeps is None or len(self.sleeps) < self.max_sleeps, "it keeps sleeping: it would never stop"
        self.sleeps.append(seconds)
        self.on_sleep(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> datetime:
        """Move time on by hand; returns the new now()."""
        self.t += seconds
        return self.start_at + timedelta(seconds=self.t)


def delivery(
    mid: int = 1, *, generation: int = 1, qos: int = 1, rows: int = 1,
    rejections: int | Sequence[RejectionCode] = 0, topic: str = "sensors/5/readings",
) -> Delivery:
    """A validated message: `rows` readings, and rejections (a count, or their codes) of array elements."""
    codes = [RejectionCode.WRONG_TYPE] * rejections if isinstance(rejections, int) else list(rejections)
    parsed = Parsed(
        rows=tuple(Row(5, T0, f"v{mid}.{i}", float(i), "C") for i in range(rows)),
        indexes=tuple(range(rows)),
        rejections=tuple(
            Rejection(f"bad {mid}.{i}".encode(), code, f"element {i}: {code.value}") for i, code in enumerate(codes)
        ),
    )
    return Delivery(mid, qos, generation, topic, f"payload {mid}".encode(), T0, parsed)


def heartbeat(*, at: datetime = T0, **fields: object) -> Heartbeat:
    """A worker's heartbeat as the contract defines it: zero counters, connected, database ok, unless told."""
    counters = dict.fromkeys(("received", "stored", "duplicates", "conflicts", "rejected", "handler_errors",
                              "batches", "db_errors", "in_flight", "inbox_peak"), 0)
    return Heartbeat.model_validate({"client_id": "bridge-1", "at": at, **counters, "db_ok": True,
                                     "mqtt_connected": True, "last_commit_at": None, **fields})


def paho_delivers(client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
    """What paho's network thread does with an incoming message: call on_message."""
    on_message = client.on_message
    assert on_message is not None, "the client set paho's on_message itself"
    on_message(client, None, message)
