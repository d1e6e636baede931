"""simulator/fleet.py: devices on fake connections (the fleet's plan and routing: test_simulator_fleet_run.py)."""

from __future__ import annotations

from fakes import CONNACK_OK, FakeOpener, eventually, fleet_of, run_async, started

from simulator import wire
from simulator.fleet import Device, Fleet


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


async def connected_device(opener: FakeOpener) -> tuple[Fleet, Device]:
    """A started fleet of one device, its CONNACK received."""
    fleet = await started(fleet_of(1, opener), opener)
    fleet.devices[0].data_received(CONNACK_OK)
    return fleet, fleet.devices[0]


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

    run_async(scenario)


def test_after_a_dropped_connection_the_unacknowledged_go_again_marked_dup() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet, device = await connected_device(opener)
        messages = [fleet.publish(0, "sensors/1/readings", b"{}", key) for key in range(3)]
        device.data_received(puback(1))  # message 0 done; 1 and 2 in flight as ids 2 and 3

        opener.transports[0].abort()
        assert fleet.connected_count == 0
        assert await fleet.wait_connected(0, 1) and await eventually(lambda: len(opener.transports) == 2)
        again = opener.transports[1]
        device.data_received(CONNACK_OK)

        assert again.publishes() == [(2, True, "sensors/1/readings"), (3, True, "sensors/1/readings")]
        assert (fleet.counters.reconnects, fleet.counters.resent) == (1, 2)
        device.data_received(puback(2) + puback(3))
        assert [m.acked for m in messages] == [True, True, True] and messages[1].sends == 2
        await fleet.close()

    run_async(scenario)


def test_a_refused_login_is_counted_and_retried_with_backoff_and_an_unreachable_broker_too() -> None:
    async def scenario() -> None:
        opener = FakeOpener()
        fleet = fleet_of(2, opener)
        await started(fleet, opener)
        opener.down = True
        fleet.devices[0].data_received(b"\x20\x02\x00\x05")

        assert fleet.counters.refused == {5: 1} and fleet.connected_count == 0
        assert await eventually(lambda: fleet.counters.connect_errors >= 2)
        opener.down = False
        assert await eventually(lambda: len(opener.transports) == 3)
        await fleet.close()

    run_async(scenario)


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

    run_async(scenario)
