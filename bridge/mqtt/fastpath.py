"""paho's network loop, made cheaper per message: buffered reads, every buffered packet per turn, acks in one write.

A worker draining a backlog spends most of its network thread in paho's loop:
three recv() calls per packet (command byte, length, body), one select() per
packet, and one wake-up of the loop (a byte written to its socket pair) per
PUBACK. This module changes exactly that, and nothing about when a message is
acknowledged: the pipeline still acks a batch only after it committed, in
arrival order, and the consumer still drops ids of an earlier connection.

It reaches into paho's internals (underscore names), so it checks for them and
for a tested paho version; when one is missing the worker uses plain paho and
logs one warning (make_client). Tested with paho-mqtt 2.1 and 2.2 (setup.cfg
pins the range).
"""

from __future__ import annotations

import inspect
import logging
import ssl
import struct
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from bridge.mqtt.client import PlainClient

logger = logging.getLogger(__name__)

try:  # paho 2.2 turns a packet it cannot decode into a protocol error; 2.1 has no such exception
    from paho.mqtt.exception import MalformedPacket as _MALFORMED
except ImportError:  # pragma: no cover - paho 2.1
    _MALFORMED = ValueError  # type: ignore[assignment,misc]

READ_CHUNK = 65_536  # bytes per recv(): a few hundred readings at once
TESTED_VERSIONS = ("2.1.", "2.2.")
# What FastClient relies on, by name and (for methods it calls) parameters.
_INTERNALS = {  # and the attributes _in_packet, _in_callback_mutex, _manual_ack, _protocol, _transport, _sock,
    # _msgtime_mutex, _last_bytes_received
    "_packet_handle": ("self",),
    "_create_socket": ("self",),
    "_handle_publish": ("self",),
    "_packet_read": ("self",),
    "_packet_queue": ("self", "command", "packet", "mid", "qos", "info"),
    "_loop_rc_handle": ("self", "rc"),
}
_PUBACK_OF = struct.Struct("!BBH")  # fixed header, remaining length 2, message id: success needs no reason code


class BufferedSocket:
    """The broker socket, read READ_CHUNK bytes at a time; pending() says what is buffered.

    paho's loop asks pending() (the hook its TLS path relies on) and skips
    select() while bytes are pending, so buffered packets cost no system call.
    Everything else (send, fileno, close, setblocking ...) goes to the socket.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._pos = 0

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes, from the buffer or one read of the socket; b"" when the peer closed."""
        if self._pos >= len(self._buffer):
            data = self._sock.recv(READ_CHUNK)  # BlockingIOError and ssl errors go to paho as before
            if len(data) <= size:
                return bytes(data)
            self._buffer, self._pos = bytearray(data), 0
        chunk = bytes(self._buffer[self._pos : self._pos + size])
        self._pos += len(chunk)
        return chunk

    def fill(self) -> bool:
        """Read the socket into an empty buffer; False when the peer closed (BlockingIOError if nothing came)."""
        if self._pos < len(self._buffer):
            return True
        self._buffer, self._pos = bytearray(self._sock.recv(READ_CHUNK)), 0
        return bool(self._buffer)

    def take_packet(self) -> tuple[int, bytearray] | None:
        """(first byte, body) of the next MQTT packet if all of it is buffered, consumed; else None."""
        bounds = self._next_packet()
        if bounds is None:
            return None
        start, (body, self._pos) = self._pos, bounds
        return self._buffer[start], self._buffer[body : self._pos]

    def _next_packet(self) -> tuple[int, int] | None:
        """(start of the body, end) of the next packet if all of it is buffered."""
        buffer, end = self._buffer, len(self._buffer)
        remaining = _varint(buffer, self._pos + 1, end)
        if remaining is None:
            return None  # not all here yet (or malformed): paho's own reader takes over
        length, cursor = remaining
        if cursor + length > end:
            return None
        return cursor, cursor + length

    def pending(self) -> int:
        """Bytes buffered here, plus those the TLS layer holds decrypted."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._pos + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FastClient(PlainClient):
    """paho's Client with buffered reads, every buffered packet handled per loop turn, and ack_many() in one write.

    With `on_raw_message` set (and manual acks), an incoming QoS 0 or 1
    PUBLISH goes straight to it as (topic bytes, payload, mid, qos): no
    MQTTMessage, no Properties object, no topic-filter matching per message,
    which paho's own path builds for every message. Anything else (QoS 2, the
    first releases' plain on_message) takes paho's path, and reaches
    `on_raw_message` through PlainClient's on_message.
    """

    def _message_read(self) -> None:
        """Not yet the end of the read: loop_read() calls on_read_end once, after every buffered packet."""

    def _handle_publish(self) -> MQTTErrorCode:
        qos = (self._in_packet["command"] & 0x06) >> 1
        handler = self.on_raw_message
        if handler is None or not self._manual_ack or qos == 2:
            return super()._handle_publish()
        try:
            topic, mid, payload = _split_publish(self._in_packet["packet"], qos=qos,
                                                 properties=self._protocol == mqtt.MQTTv5)
        except IndexError:
            # What paho 2.2 does with a malformed packet (2.1 would let the error end its loop):
            # the connection is dropped, and paho reconnects.
            logger.error("malformed PUBLISH from the broker (shorter than its header says); reconnecting")
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        with self._in_callback_mutex:
            handler(topic, payload, mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "websockets":  # its wrapper frames the stream itself
            return sock
        return BufferedSocket(sock)

    def _packet_read(self) -> MQTTErrorCode:
        """A whole buffered packet is handled straight from the buffer; anything else as paho reads it."""
        sock: Any = self._sock
        if self._in_packet["command"] != 0 or not isinstance(sock, BufferedSocket):
            return super()._packet_read()
        problem = _fill(sock)
        if problem is not None:
            return problem
        rc = self._handle_buffered(sock)
        return super()._packet_read() if rc is None else rc

    def _handle_buffered(self, sock: BufferedSocket) -> MQTTErrorCode | None:
        """Handle the next packet if all of it is buffered, straight from the buffer; None if it is not."""
        packet = sock.take_packet()
        if packet is None:
            return None
        self._in_packet["command"], self._in_packet["packet"], self._in_packet["pos"] = packet[0], packet[1], 0
        try:
            return self._packet_handle()
        except _MALFORMED as exc:  # what paho 2.2's reader does with it
            logger.error("malformed packet from the broker (%s); reconnecting", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                               "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle one packet, then every whole packet already buffered, before the loop selects again."""
        try:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc: MQTTErrorCode | None = self._packet_read()
            # Then only what is already buffered: reading the socket again here would never end
            # while a backlog streams in, and on_read_end (the inbox, with its bound) would
            # wait for the end. A partial packet left over is finished on the next turn,
            # which paho starts without waiting in select() since pending() reports it.
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                sock: Any = self._sock  # our BufferedSocket, which paho types as any socket
                rc = self._handle_buffered(sock) if isinstance(sock, BufferedSocket) else None
            if rc is not None and rc > 0:
                return self._loop_rc_handle(rc)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            with self._msgtime_mutex:  # what paho does after each packet: the keep-alive watches it
                self._last_bytes_received = mqtt.time_func()
            if self.on_read_end is not None:
                self.on_read_end()

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK these QoS 1 messages, in this order, as one write and one wake-up of the loop."""
        packet = b"".join(_PUBACK_OF.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        if packet:
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)


def _fill(sock: BufferedSocket) -> MQTTErrorCode | None:
    """Have bytes buffered: None when there are, else the return code paho's reader would give."""
    try:
        if not sock.fill():
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):  # TLS: a record not complete yet
        return MQTTErrorCode.MQTT_ERR_AGAIN
    except OSError as err:
        logger.warning("failed to receive on the broker's socket: %s", err)
        return MQTTErrorCode.MQTT_ERR_CONN_LOST
    return None


def _split_publish(packet: bytearray, *, qos: int, properties: bool) -> tuple[bytes, int, bytes]:
    """(topic, message id, payload) of a PUBLISH's variable header and payload (MQTT 5: properties skipped)."""
    end = 2 + ((packet[0] << 8) | packet[1])
    topic = bytes(packet[2:end])
    mid = 0
    if qos:
        mid = (packet[end] << 8) | packet[end + 1]
        end += 2
    if properties:  # the properties' length, then the properties we do not use
        found = _varint(packet, end, len(packet))
        if found is None:
            raise IndexError("the properties' length runs past the packet or over 4 bytes")
        length, end = found
        end += length
    return topic, mid, bytes(packet[end:])


def _varint(buffer: bytearray, cursor: int, end: int) -> tuple[int, int] | None:
    """(value, position after it) of the MQTT variable byte integer at `cursor`; None if it runs past
    `end` or over its 4 bytes."""
    value, shift = 0, 0
    while cursor < end and shift <= 21:
        byte = buffer[cursor]
        cursor += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, cursor
        shift += 7
    return None


def missing_internals(client_class: type[mqtt.Client] | None = None) -> list[str]:
    """What FastClient needs that this paho (or `client_class`) lacks; empty when the fast path can be used."""
    missing = []
    for name, parameters in _INTERNALS.items():
        method = getattr(client_class or mqtt.Client, name, None)
        if method is None or tuple(inspect.signature(method).parameters)[: len(parameters)] != parameters:
            missing.append(name)
    version = getattr(mqtt, "__version__", None) or _installed_version()
    if not version.startswith(TESTED_VERSIONS):
        missing.append(f"a tested paho-mqtt version (installed: {version})")
    return missing


def _installed_version() -> str:
    try:
        return metadata.version("paho-mqtt")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_client(**kwargs: Any) -> PlainClient:
    """A FastClient, or plain paho with one warning when this paho lacks what the fast path needs."""
    missing = missing_internals()
    if missing:
        logger.warning("paho-mqtt fast path off (missing: %s); using plain paho, which is slower per message",
                       ", ".join(missing))
        return PlainClient(**kwargs)
    return FastClient(**kwargs)
