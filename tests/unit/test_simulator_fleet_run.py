"""simulator/fleet_run.py: the fleet's plan, the publisher's routing to each sensor's device, the open-files limit."""

from __future__ import annotations

import resource
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import CONNACK_OK, FakeOpener, fleet_of, run_async, started

from simulator.fleet_run import FleetError, FleetPlan, FleetPublisher, device_of, raise_open_files
from simulator.pacing import Pacer
from simulator.readings import Kind, MessageFactory


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

    run_async(scenario)


def test_too_few_file_descriptors_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    set_to: list[Any] = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: set_to.append(limits))

    assert raise_open_files(2000) == 2000 and set_to == [(2000, 4096)]
    with pytest.raises(FleetError, match=r"needs 5000 open files.*at most 4096 \(ulimit -Hn\)"):
        raise_open_files(5000)
