"""Fakes shared by the unit tests: a clock moved by hand, deliveries to order, paho delivering, fleet connections.

Importable (`from fakes import FakeClock`) for type annotations; tests/unit/conftest.py
hands them out as fixtures. A fake used by one test module only stays in that module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from bridge.config import Settings as BridgeSettings
from bridge.model import Delivery, Parsed, Rejection, Row
from iotcommon.contract import Heartbeat, RejectionCode
from iotcommon.errors import ConfigError
from simulator import wire
from simulator.fleet import Device, DeviceLogin, Fleet, FleetOptions

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


# --- the simulator's fleet: devices on fake connections -------------------------------------

CONNACK_OK = b"\x20\x02\x00\x00"


class FakeTransport:
    """Records what a device writes; closing it tells the device its connection is gone."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self._lose()

    def packets(self) -> list[tuple[int, int, bytes]]:
        """(type, flags, body) of every packet written, parsed as the broker would."""
        return [(p.kind, p.flags, p.body) for p in wire.PacketReader().feed(bytes(self.written))]

    def publishes(self) -> list[tuple[int, bool, str]]:
        """(packet id, dup, topic) of each PUBLISH written."""
        result = []
        for kind, flags, body in self.packets():
            if kind == wire.PUBLISH:
                length = int.from_bytes(body[:2], "big")
                topic = body[2:2 + length].decode()
                result.append((int.from_bytes(body[2 + length:4 + length], "big"), bool(flags & 0x08), topic))
        return result

    def _lose(self) -> None:
        if not self.closed:
            self.closed = True
            self.device.connection_lost(None)


class FakeOpener:
    """Connects a device at once over a FakeTransport, or fails while `down`."""

    def __init__(self) -> None:
        self.transports: list[FakeTransport] = []
        self.down = False

    async def __call__(self, device: Device, options: FleetOptions, local: tuple[str, int] | None) -> object:
        if self.down:
            raise ConnectionRefusedError("broker down")
        transport = FakeTransport(device)
        self.transports.append(transport)
        device.connection_made(transport)
        return transport


async def started(fleet: Fleet, opener: FakeOpener) -> Fleet:
    """Start the fleet and wait until every device has its connection."""
    await fleet.start()
    assert await eventually(lambda: len(opener.transports) == len(fleet.devices))
    return fleet


def fleet_of(count: int, opener: FakeOpener, *, window: int = 2) -> Fleet:
    options = FleetOptions(host="broker", port=1883, window=window, reconnect_initial_s=0.001, reconnect_max_s=0.001)
    return Fleet([DeviceLogin(f"d-{n}", "u", "p") for n in range(count)], options, opener=opener)


def run_async(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def eventually(condition: Callable[[], bool]) -> bool:
    """Whether `condition` holds within about a second, checked between turns of the event loop."""
    for _ in range(500):
        if condition():
            return True
        await asyncio.sleep(0.002)
    return False


def settings_from(**environ: str) -> BridgeSettings:
    """The bridge's settings read from exactly these variables."""
    return BridgeSettings.from_env(environ)


def config_error(**environ: str) -> ConfigError:
    """The ConfigError the bridge's settings raise for exactly these variables (the test fails if none)."""
    with pytest.raises(ConfigError) as caught:
        BridgeSettings.from_env(environ)
    return caught.value
