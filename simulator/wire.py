"""The few MQTT 3.1.1 packets a device needs, encoded and decoded (OASIS MQTT 3.1.1, section 3).

A device connects, publishes at QoS 1, reads CONNACK, PUBACK and PINGRESP,
and keeps its connection alive: nothing else, so that thousands of them fit
in one process (simulator/fleet.py). Pure functions and one incremental
reader; no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 12, 13, 14
PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])
MAX_PACKET_ID = 65_535
_MAX_REMAINING = 268_435_455  # four bytes of variable length
# CONNACK return codes (3.2.2.3), for messages people read.
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class ProtocolError(Exception):
    """The broker sent something a 3.1.1 device cannot make sense of."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet from the broker: its type, the flags of its first byte and its body."""

    kind: int
    flags: int
    body: bytes

    def connack(self) -> tuple[bool, int]:
        """(session present, return code) of a CONNACK."""
        if self.kind != CONNACK or len(self.body) != 2:
            raise ProtocolError(f"expected a CONNACK, got packet type {self.kind} of {len(self.body)} bytes")
        return bool(self.body[0] & 1), self.body[1]

    def packet_id(self) -> int:
        """The packet identifier of a PUBACK."""
        if len(self.body) < 2:
            raise ProtocolError(f"packet type {self.kind} has no packet identifier")
        return int(struct.unpack_from("!H", self.body)[0])


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer: 7 bits a byte, the high bit set while more follow."""
    if not 0 <= length <= _MAX_REMAINING:
        raise ValueError(f"a packet body of {length} bytes is longer than MQTT allows")
    out = bytearray()
    while True:
        length, byte = divmod(length, 128)
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect_packet(
    client_id: str, *, username: str | None, password: str | None, keepalive_s: int, clean_session: bool,
) -> bytes:
    """A CONNECT (protocol level 4) with the given credentials and session choice."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    flags |= 0x02 if clean_session else 0
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + _string(client_id)
    body += (_string(username) if username is not None else b"") + (_string(password) if password is not None else b"")
    return bytes([CONNECT << 4]) + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int, *, dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH; `dup` marks a re-send of a packet the broker may have seen."""
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise ValueError(f"packet id {packet_id} outside 1..{MAX_PACKET_ID}")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | 0x02
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return bytes([first]) + remaining_length(len(body)) + body


class PacketReader:
    """Splits the bytes of a connection into packets, however they were cut."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Add received bytes; return every packet now complete, in order."""
        self._buffer += data
        packets = []
        while (packet := self._next()) is not None:
            packets.append(packet)
        return packets

    def _next(self) -> Packet | None:
        buffer = self._buffer
        length, multiplier, position = 0, 1, 1
        while True:
            if position >= len(buffer):
                return None
            byte = buffer[position]
            length += (byte & 0x7F) * multiplier
            position += 1
            if not byte & 0x80:
                break
            multiplier *= 128
            if position > 4:
                raise ProtocolError("malformed remaining length")
        end = position + length
        if len(buffer) < end:
            return None
        packet = Packet(buffer[0] >> 4, buffer[0] & 0x0F, bytes(buffer[position:end]))
        del buffer[:end]
        return packet
