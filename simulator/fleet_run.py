"""`python -m simulator --devices N`: the planned messages spread over N device connections.

Each device is its own MQTT 3.1.1 connection with its own client id,
`<prefix>-<n>`, and publishes the readings of its own sensors: sensor s
belongs to device (s - first sensor) mod N, so a device always publishes the
same topics, as a real one does. Every device logs in with MQTT_URL's
account (the `simulator` account may publish any sensor's readings): what
is reproduced is N connections, client ids, keep-alives and reconnects at
the broker, not N accounts (benchmarks/fleet.py has those).
"""

from __future__ import annotations

import asyncio
import functools
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from iotcommon.contract import topic_sensor_segment
from iotcommon.settings import MqttEndpoint
from iotcommon.transport import tls_context
from simulator.fleet import DeviceLogin, Fleet, FleetOptions, Outgoing
from simulator.pacing import Clock, Pacer, SystemClock
from simulator.publisher import Progress, RunResult
from simulator.readings import Message, MessageFactory
from simulator.tracker import Tally
from simulator.wire import CONNACK_REASONS

SPARE_FILES = 64  # descriptors the process needs besides one per device
YIELD_EVERY = 200  # messages published between two turns of the event loop at --rate max


class FleetError(Exception):
    """The fleet cannot run: too few file descriptors, or the broker refused or could not be reached."""


@dataclass(frozen=True)
class FleetPlan:
    """How many devices, what they are called, how many messages each keeps in flight."""

    devices: int
    client_id_prefix: str
    window: int  # the simulator's --window over the whole fleet
    connect_timeout_s: float
    confirm_timeout_s: float
    first_sensor: int

    @property
    def device_window(self) -> int:
        """Each device's share of --window (at least one message)."""
        return max(1, math.ceil(self.window / self.devices))


def device_of(sensor_id: int, *, first_sensor: int, devices: int) -> int:
    """The device that publishes a sensor's readings."""
    return (sensor_id - first_sensor) % devices


def raise_open_files(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards `needed`; FleetError if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetError(
            f"--devices needs {needed} open files (one per device and {SPARE_FILES} more), but this process may "
            f"open at most {hard} (ulimit -Hn); raise it, or use fewer devices"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def fleet_options(endpoint: MqttEndpoint, plan: FleetPlan) -> FleetOptions:
    """The devices' connection settings from MQTT_URL (mqtts:// verified as every client of the project does)."""
    return FleetOptions(
        host=endpoint.host, port=endpoint.port, window=plan.device_window,
        tls=tls_context(endpoint) if endpoint.tls else None, connect_timeout_s=plan.connect_timeout_s,
        reconnect_max_s=5.0,  # a load test should resume soon once the broker is back
    )


def logins(endpoint: MqttEndpoint, plan: FleetPlan) -> list[DeviceLogin]:
    """One login per device: its own client id, MQTT_URL's account."""
    password = endpoint.password.get_secret_value() if endpoint.password else None
    return [DeviceLogin(f"{plan.client_id_prefix}-{n}", endpoint.username, password) for n in range(plan.devices)]


class FleetPublisher:
    """Paces the planned messages and hands each to its sensor's device; counts what the broker confirmed."""

    def __init__(
        self, fleet: Fleet, factory: MessageFactory, *, pacer: Pacer, clock: Clock, wall: Callable[[], datetime],
        first_sensor: int, confirm_timeout_s: float, progress: Progress | None = None,
    ) -> None:
        self._fleet = fleet
        self._factory = factory
        self._pacer = pacer
        self._clock = clock
        self._wall = wall
        self._first_sensor = first_sensor
        self._confirm_timeout_s = confirm_timeout_s
        self._progress = progress or (lambda published, total, confirmed: None)
        self._tally = Tally()
        self._messages: list[Message] = []
        self._published_at: dict[int, datetime] = {}
        fleet_size = len(fleet.devices)
        self._limit = fleet_size * fleet.options.window  # beyond this, wait for PUBACKs (the --window)

    def acked(self, device: int, message: Outgoing, at: float) -> None:
        """The fleet's PUBACK callback."""
        self._tally.confirmed += 1
        self._tally.puback_latencies_s.append(at - message.queued_at)

    async def run(self) -> RunResult:
        """Publish every planned message on schedule, then wait for the last PUBACKs."""
        total, devices = len(self._factory), len(self._fleet.devices)
        started = self._clock.monotonic()
        for index in range(total):
            delay = self._pacer.due_at(index) - self._clock.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if self._fleet.outstanding >= self._limit:
                await self._fleet.wait_outstanding(self._limit - 1, math.inf)
            message = self._factory.build(index, self._wall)
            self._messages.append(message)
            self._published_at[index] = self._wall()
            device = device_of(_sensor_of(message), first_sensor=self._first_sensor, devices=devices)
            self._fleet.publish(device, message.topic, message.payload, index)
            self._tally.published += 1
            self._progress(index + 1, total, self._tally.confirmed)
        await self._fleet.wait_outstanding(0, self._confirm_timeout_s)
        self._progress(total, total, self._tally.confirmed)
        counters = self._fleet.counters
        self._tally.failed = self._fleet.outstanding
        self._tally.resent, self._tally.reconnects = counters.resent, counters.reconnects
        elapsed = self._clock.monotonic() - started
        return RunResult(self._tally, elapsed, self._messages, self._published_at)


def _sensor_of(message: Message) -> int:
    """The sensor a planned message is for, from its topic (the contract's, as the factory built it)."""
    segment = topic_sensor_segment(message.topic)
    if segment is None:
        raise ValueError(f"not a reading topic: {message.topic!r}")
    return int(segment)


async def connect_fleet(fleet: Fleet, *, where: str, timeout_s: float) -> None:
    """Start the devices; FleetError as soon as the broker refuses one, or if none connects in time."""
    await fleet.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fleet.counters.refused:
            code = next(iter(fleet.counters.refused))
            raise FleetError(f"the broker at {where} (MQTT_URL) refused the devices' connections: "
                             f"{CONNACK_REASONS.get(code, f'return code {code}')}")
        if fleet.connected_count:
            return
        await fleet.wait_connected(1, min(1.0, deadline - time.monotonic()))
    raise FleetError(f"no device could connect to the broker at {where} (MQTT_URL) within {timeout_s:.0f} s")


def run_fleet(
    plan: FleetPlan, endpoint: MqttEndpoint, factory: MessageFactory, pacer: Pacer, *, progress: Progress | None,
) -> RunResult:
    """Connect the fleet, publish every planned message through it, disconnect; FleetError if it cannot run."""
    raise_open_files(plan.devices + SPARE_FILES)

    async def publish() -> RunResult:
        fleet = Fleet(logins(endpoint, plan), fleet_options(endpoint, plan))
        publisher = FleetPublisher(
            fleet, factory, pacer=pacer, clock=SystemClock(), wall=functools.partial(datetime.now, UTC),
            first_sensor=plan.first_sensor, confirm_timeout_s=plan.confirm_timeout_s, progress=progress,
        )
        fleet.on_ack = publisher.acked
        try:
            await connect_fleet(fleet, where=f"{endpoint.host}:{endpoint.port}", timeout_s=plan.connect_timeout_s)
            return await publisher.run()
        finally:
            await fleet.close()

    return asyncio.run(publish())
