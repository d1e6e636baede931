"""simulator/fleet.py and fleet_run.py: devices on fake connections; the fleet's plan and routing."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from simulator import wire
from simulator.fleet import Device, DeviceLogin, Fleet, FleetOptions
from simulator.fleet_run import FleetError, FleetPlan, FleetPublisher, device_of, raise_open_files
from simulator.pacing import Pacer
from simulator.readings import Kind, MessageFactory

CONNACK_OK = b"\x20\x02\x00\x00"


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


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
    assert await _eventually(lambda: len(opener.transports) == len(fleet.devices))
    return fleet


async def connected_device(opener: FakeOpener) -> tuple[Fleet, Device]:
    """A started fleet of one device, its CONNACK received."""
    fleet = await started(fleet_of(1, opener), opener)
    fleet.devices[0].data_received(CONNACK_OK)
    return fleet, fleet.devices[0]


def fleet_of(count: int, opener: FakeOpener, *, window: int = 2) -> Fleet:
    options = FleetOptions(host="broker", port=1883, window=window, reconnect_initial_s=0.001, reconnect_max_s=0.001)
    return Fleet([DeviceLogin(f"d-{n}", "u", "p") for n in range(count)], options, opener=opener)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_device_connects_then_publishes_within_its_window_as_pubacks_come() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet = fleet_of(1, opener)
        acked: list[int] = []
        fleet.on_ack = lambda device, message, at: acked.append(message.key)
        await started(fleet, opener)
        (link,) = opener.transports
        for key in range(3):
            fleet.publish(0, "sensors/1/readings", b"{}", key)

        assert [kind for kind, _, _ in link.packets()] == [wire.CONNECT], "nothing is published before the CONNACK"
        fleet.devices[0].data_received(CONNACK_OK)
        assert link.publishes() == [(1, False, "sensors/1/readings"), (2, False, "sensors/1/readings")]
        fleet.devices[0].data_received(puback(1))
        assert [p[0] for p in link.publishes()] == [1, 2, 3]
        fleet.devices[0].data_received(puback(2) + puback(3))
        assert acked == [0, 1, 2] and fleet.outstanding == 0 and fleet.connected_count == 1
        await fleet.close()

    run(scenario)


def test_after_a_dropped_connection_the_unacknowledged_go_again_marked_dup() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet, device = await connected_device(opener)
        messages = [fleet.publish(0, "sensors/1/readings", b"{}", key) for key in range(3)]
        device.data_received(puback(1))  # message 0 done; 1 and 2 in flight as ids 2 and 3

        opener.transports[0].abort()
        assert fleet.connected_count == 0
        assert await fleet.wait_connected(0, 1) and await _eventually(lambda: len(opener.transports) == 2)
        again = opener.transports[1]
        device.data_received(CONNACK_OK)

        assert again.publishes() == [(2, True, "sensors/1/readings"), (3, True, "sensors/1/readings")]
        assert (fleet.counters.reconnects, fleet.counters.resent) == (1, 2)
        device.data_received(puback(2) + puback(3))
        assert [m.acked for m in messages] == [True, True, True] and messages[1].sends == 2
        await fleet.close()

    run(scenario)


def test_a_refused_login_is_counted_and_retried_with_backoff_and_an_unreachable_broker_too() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet = fleet_of(2, opener)
        await started(fleet, opener)
        opener.down = True
        fleet.devices[0].data_received(b"\x20\x02\x00\x05")

        assert fleet.counters.refused == {5: 1} and fleet.connected_count == 0
        assert await _eventually(lambda: fleet.counters.connect_errors >= 2)
        opener.down = False
        assert await _eventually(lambda: len(opener.transports) == 3)
        await fleet.close()

    run(scenario)


def test_an_idle_device_pings_at_half_its_keepalive() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet, device = await connected_device(opener)
        sent_at = device.last_sent_at

        device.ping_if_idle(sent_at + 29)
        device.ping_if_idle(sent_at + 31)

        assert [kind for kind, _, _ in opener.transports[0].packets()] == [wire.CONNECT, wire.PINGREQ]
        await fleet.close()
        assert opener.transports[0].packets()[-1][0] == wire.DISCONNECT

    run(scenario)


async def _eventually(condition: Callable[[], bool]) -> bool:
    for _ in range(500):
        if condition():
            return True
        await asyncio.sleep(0.002)
    return False


# --- the simulator's plan --------------------------------------------------------------------------


def test_each_sensor_belongs_to_one_device_and_the_window_is_shared() -> None:
    assert [device_of(s, first_sensor=11, devices=4) for s in range(11, 20)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    plan = FleetPlan(devices=300, client_id_prefix="p", window=100, connect_timeout_s=1, confirm_timeout_s=1,
                     first_sensor=1)
    assert plan.device_window == 1
    assert FleetPlan(devices=8, client_id_prefix="p", window=100, connect_timeout_s=1, confirm_timeout_s=1,
                     first_sensor=1).device_window == 13


def test_the_publisher_routes_every_reading_to_its_sensors_device() -> None:
    class Clock:
        def monotonic(self) -> float:
            return 0.0

        def sleep(self, seconds: float) -> None:
            raise AssertionError("never blocks the event loop")

    async def scenario() -> None:
        opener = FakeOpener()
        fleet = fleet_of(3, opener, window=100)
        await started(fleet, opener)
        for device in fleet.devices:
            device.data_received(CONNACK_OK)
        factory = MessageFactory([Kind.UNIQUE] * 12, sensors=6, array=1, run_id="r1", seed=1, first_sensor=5)
        publisher = FleetPublisher(fleet, factory, pacer=Pacer(Clock(), interval_s=0.0), clock=Clock(),
                                   wall=lambda: datetime(2026, 1, 1, tzinfo=UTC), first_sensor=5,
                                   confirm_timeout_s=0.05)
        result = await publisher.run()

        topics = [{topic for _, _, topic in t.publishes()} for t in opener.transports]
        assert topics == [{"sensors/5/readings", "sensors/8/readings"}, {"sensors/6/readings", "sensors/9/readings"},
                          {"sensors/7/readings", "sensors/10/readings"}]
        assert (result.tally.published, result.tally.confirmed, result.tally.failed) == (12, 0, 12)
        await fleet.close()

    run(scenario)


def test_too_few_file_descriptors_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    set_to: list[Any] = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: set_to.append(limits))

    assert raise_open_files(2000) == 2000 and set_to == [(2000, 4096)]
    with pytest.raises(FleetError, match=r"needs 5000 open files.*at most 4096 \(ulimit -Hn\)"):
        raise_open_files(5000)
