"""Many devices, each its own MQTT connection and client id, in one process on one asyncio loop.

Why not paho: a paho client runs a network thread of its own (or needs its
loop driven by hand), and thousands of threads cost more CPU and memory than
the broker under test. A device here is an asyncio Protocol with the few
MQTT 3.1.1 packets it needs (simulator/wire.py): 10-14 KB of the process each, so 10,000
devices fit in one process and one core. Each device publishes at QoS 1
with a small window of unacknowledged messages; when its connection drops
it reconnects with capped, jittered backoff and sends every unacknowledged
message again (with DUP set): at least once, as a real device would.

Used by `python -m simulator --devices N` and benchmarks/fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any

from iotcommon.backoff import Backoff
from simulator import wire

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """Who one device is to the broker."""

    client_id: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How every device of a fleet behaves."""

    host: str
    port: int
    keepalive_s: int = 60
    clean_session: bool = True
    window: int = 10  # unacknowledged QoS 1 messages per device
    connect_timeout_s: float = 30.0
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 30.0
    # 1.0 is "full jitter": each delay anywhere between 0 and its cap, so a fleet that
    # lost its broker at once does not come back at once.
    reconnect_jitter: float = 1.0
    tls: ssl.SSLContext | None = None
    source_hosts: Sequence[str] = ()  # local addresses to spread connections over (127.0.0.x)


@dataclass(slots=True)
class Outgoing:
    """A message a device has to deliver; `key` is the caller's (a message index)."""

    topic: str
    payload: bytes
    key: int
    queued_at: float = 0.0  # time.monotonic() when the caller handed it over
    sent_at: float = 0.0  # time.time() of its latest PUBLISH (wall clock, to compare with a database's)
    sends: int = 0
    acked: bool = False


Acked = Callable[[int, Outgoing, float], None]  # (device index, message, monotonic time of the PUBACK)
# Opens one device's connection (its Protocol gets connection_made) from a local address, or raises OSError.
Opener = Callable[["Device", "FleetOptions", "tuple[str, int] | None"], Awaitable[object]]


async def open_tcp(device: Device, options: FleetOptions, local: tuple[str, int] | None) -> object:
    """The real opener: a TCP (or TLS) connection to the broker."""
    loop = asyncio.get_running_loop()
    return await loop.create_connection(
        lambda: device, options.host, options.port, ssl=options.tls, local_addr=local,
        server_hostname=options.host if options.tls else None,
    )


@dataclass
class FleetCounters:
    """What the whole fleet did so far."""

    connects: int = 0  # successful CONNACKs, first connections included
    reconnects: int = 0  # successful CONNACKs after an earlier connection
    refused: dict[int, int] = field(default_factory=dict)  # CONNACK return code -> count
    connect_errors: int = 0  # TCP connects that failed (refused, reset, timed out)
    resent: int = 0  # PUBLISHes sent again after a reconnect
    acked: int = 0


class Device(asyncio.Protocol):
    """One device: its queue and in-flight messages outlive its connections."""

    def __init__(self, index: int, login: DeviceLogin, fleet: Fleet) -> None:
        self.index = index
        self.login = login
        self._fleet = fleet
        self.pending: deque[Outgoing] = deque()
        self.in_flight: dict[int, Outgoing] = {}
        self._next_id = 0
        self._transport: asyncio.Transport | None = None
        self._reader = wire.PacketReader()
        self.connected = False
        self.ever_connected = False
        self.last_sent_at = 0.0
        self.backoff = Backoff(initial_s=fleet.options.reconnect_initial_s, max_s=fleet.options.reconnect_max_s,
                               jitter=fleet.options.reconnect_jitter)

    # --- asyncio.Protocol: thin, each hands over to the fleet or the queue

    def connection_made(self, transport: Any) -> None:
        """Send CONNECT."""
        self._transport = transport
        self._reader = wire.PacketReader()
        options = self._fleet.options
        self._send(wire.connect_packet(self.login.client_id, username=self.login.username,
                                       password=self.login.password, keepalive_s=options.keepalive_s,
                                       clean_session=options.clean_session))

    def data_received(self, data: bytes) -> None:
        """Handle every complete packet."""
        try:
            for packet in self._reader.feed(data):
                self._handle(packet)
        except wire.ProtocolError as exc:
            logger.warning("device %s: %s; reconnecting", self.login.client_id, exc)
            self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; the fleet schedules the next attempt."""
        was_connected, self.connected, self._transport = self.connected, False, None
        self._fleet.lost(self, was_connected)

    # --- what the fleet and the caller use

    def enqueue(self, message: Outgoing) -> None:
        """Deliver `message`: at once if the window allows, else as PUBACKs free it."""
        self.pending.append(message)
        self._fill_window()

    def ping_if_idle(self, now: float) -> None:
        """Keep the connection alive: PINGREQ after half a keep-alive without sending anything."""
        if self.connected and now - self.last_sent_at >= self._fleet.options.keepalive_s / 2:
            self._send(wire.PINGREQ_PACKET)

    def disconnect(self) -> None:
        """Say goodbye and close (no reconnect: the fleet is closing)."""
        if self._transport is not None:
            self._send(wire.DISCONNECT_PACKET)
            self._transport.close()

    def drop(self) -> None:
        """Close the connection without a goodbye (the broker sent garbage)."""
        if self._transport is not None:
            self._transport.abort()

    # --- inside

    def _handle(self, packet: wire.Packet) -> None:
        if packet.kind == wire.CONNACK:
            _, code = packet.connack()
            if code:
                self._fleet.refused(self, code)
                self.drop()
                return
            self._connected()
        elif packet.kind == wire.PUBACK:
            message = self.in_flight.pop(packet.packet_id(), None)
            if message is not None:
                self._fleet.acked(self, message)
            self._fill_window()

    def _connected(self) -> None:
        self._fleet.connected(self)
        self.connected, self.ever_connected = True, True
        self.backoff.reset()
        # Whatever was in flight on the old connection goes out again, marked DUP, with its
        # packet id: the broker may have received it before the connection dropped.
        for packet_id, message in self.in_flight.items():
            self._publish(packet_id, message, dup=True)
        self._fill_window()

    def _fill_window(self) -> None:
        while self.connected and self.pending and len(self.in_flight) < self._fleet.options.window:
            message = self.pending.popleft()
            packet_id = self._packet_id()
            self.in_flight[packet_id] = message
            self._publish(packet_id, message, dup=False)

    def _publish(self, packet_id: int, message: Outgoing, *, dup: bool) -> None:
        message.sends += 1
        message.sent_at = time.time()
        if message.sends > 1:
            self._fleet.counters.resent += 1
        self._send(wire.publish_packet(message.topic, message.payload, packet_id, dup=dup))

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % wire.MAX_PACKET_ID + 1
            if self._next_id not in self.in_flight:
                return self._next_id

    def _send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)
            self.last_sent_at = time.monotonic()


class Fleet:
    """Connects the devices, keeps them connected, and hands each PUBACK to `on_ack`."""

    def __init__(
        self, logins: Sequence[DeviceLogin], options: FleetOptions, *, on_ack: Acked | None = None,
        opener: Opener = open_tcp,
    ) -> None:
        self.options = options
        self._opener = opener
        self.devices = [Device(index, login, self) for index, login in enumerate(logins)]
        self.counters = FleetCounters()
        self.connected_count = 0
        self.outstanding = 0  # messages handed to a device and not yet PUBACKed
        self.on_ack: Acked = on_ack or (lambda index, message, at: None)
        self._sources = cycle(options.source_hosts) if options.source_hosts else None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._pinger: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        """Whether start() was called."""
        return self._pinger is not None

    async def start(self) -> None:
        """Open every device's connection at once (answers arrive as they come)."""
        self._pinger = asyncio.get_running_loop().create_task(self._keep_alive())
        for device in self.devices:
            self._spawn(self._connect(device, delay_s=0.0))

    async def wait_connected(self, count: int, timeout_s: float) -> bool:
        """Wait until at least `count` devices are connected at the same time."""
        return await self._wait(lambda: self.connected_count >= count, timeout_s)

    async def wait_outstanding(self, at_most: int, timeout_s: float) -> bool:
        """Wait until at most `at_most` messages lack their PUBACK (0: every one has it)."""
        return await self._wait(lambda: self.outstanding <= at_most, timeout_s)

    def publish(self, device: int, topic: str, payload: bytes, key: int) -> Outgoing:
        """Have device number `device` deliver a message at QoS 1; the message records its fate."""
        self.outstanding += 1
        message = Outgoing(topic, payload, key, queued_at=time.monotonic())
        self.devices[device].enqueue(message)
        return message

    async def close(self) -> None:
        """DISCONNECT every device and stop reconnecting."""
        self._closing = True
        for task in [*self._tasks, *([self._pinger] if self._pinger else [])]:
            task.cancel()
        for device in self.devices:
            device.disconnect()
        await asyncio.sleep(0)  # let the transports flush their DISCONNECT

    # --- called by the devices

    def connected(self, device: Device) -> None:
        """A CONNACK accepted `device`."""
        self.counters.connects += 1
        if device.ever_connected:
            self.counters.reconnects += 1
        self.connected_count += 1
        self._changed.set()

    def refused(self, device: Device, code: int) -> None:
        """A CONNACK refused `device`."""
        self.counters.refused[code] = self.counters.refused.get(code, 0) + 1
        self._changed.set()

    def lost(self, device: Device, was_connected: bool) -> None:
        """`device`'s connection closed: try again after its backoff."""
        if was_connected:
            self.connected_count -= 1
        self._changed.set()
        if not self._closing:
            self._spawn(self._connect(device, delay_s=device.backoff.next_delay()))

    def acked(self, device: Device, message: Outgoing) -> None:
        """The broker acknowledged one of `device`'s messages."""
        self.counters.acked += 1
        self.outstanding -= 1
        message.acked = True
        self.on_ack(device.index, message, time.monotonic())
        self._changed.set()

    # --- inside

    async def _connect(self, device: Device, *, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        local = (next(self._sources), 0) if self._sources else None
        try:
            await asyncio.wait_for(self._opener(device, self.options, local), self.options.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            self.counters.connect_errors += 1
            logger.debug("device %s: cannot connect (%s)", device.login.client_id, exc)
            self._changed.set()
            if not self._closing:
                self._spawn(self._connect(device, delay_s=device.backoff.next_delay()))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for device in self.devices:
                device.ping_if_idle(now)

    async def _wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True
