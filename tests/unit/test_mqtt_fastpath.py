"""bridge.mqtt.fastpath: buffered reads, the lean PUBLISH path, acks in one write, and the fallback to plain paho."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from fakes import paho_delivers
from paho.mqtt.enums import CallbackAPIVersion

from bridge.mqtt import fastpath
from bridge.mqtt.client import PlainClient
from bridge.mqtt.fastpath import READ_CHUNK, BufferedSocket, FastClient, make_client, missing_internals


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of real sockets; the reading end non-blocking, as paho sets it."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_buffered_socket_reads_a_chunk_once_and_serves_small_reads_from_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"\x30\x05hello\x40\x02\x00\x01")
    buffered = BufferedSocket(ours)

    assert buffered.recv(1) == b"\x30"
    assert buffered.pending() == 10, "the rest is buffered: paho skips select() while it is"
    assert buffered.recv(1) == b"\x05"
    assert buffered.recv(5) == b"hello"
    assert buffered.recv(100) == b"\x40\x02\x00\x01", "never more than what is buffered in one call"
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)  # nothing buffered, nothing on the socket: as paho expects from its socket


def test_buffered_socket_reports_the_peer_closing_as_an_empty_read(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    theirs.sendall(b"ab")
    theirs.close()
    buffered = BufferedSocket(ours)

    assert buffered.recv(1) == b"a"
    assert buffered.recv(1) == b"b"
    assert buffered.recv(1) == b""


def test_buffered_socket_reads_at_most_a_chunk_and_delegates_the_rest(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"x" * (READ_CHUNK + 10))
    buffered = BufferedSocket(ours)

    assert len(buffered.recv(READ_CHUNK * 2)) == READ_CHUNK
    assert buffered.fileno() == ours.fileno(), "select() and everything else see the real socket"


def publish_packet(topic: bytes, payload: bytes, *, mid: int | None, properties: bytes | None) -> bytearray:
    """A PUBLISH's variable header and payload, as paho's _in_packet["packet"] holds it."""
    body = struct.pack("!H", len(topic)) + topic
    if mid is not None:
        body += struct.pack("!H", mid)
    if properties is not None:
        body += bytes([len(properties)]) + properties
    return bytearray(body + payload)


@pytest.mark.parametrize(("mid", "properties"), [(7, b""), (65535, b"\x01\x01"), (None, b""), (9, None)])
def test_publish_fields_are_split_like_paho_does(mid: int | None, properties: bytes | None) -> None:
    packet = publish_packet(b"sensors/7/readings", b'{"v": 1}', mid=mid, properties=properties)

    topic, got_mid, payload = fastpath._split_publish(packet, qos=1 if mid is not None else 0,
                                                      properties=properties is not None)

    assert (topic, got_mid, payload) == (b"sensors/7/readings", mid or 0, b'{"v": 1}')


def test_a_truncated_publish_drops_the_connection_instead_of_ending_the_loop() -> None:
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_raw_message = lambda *args: pytest.fail("a broken packet was delivered")
    client._in_packet["command"] = 0x32  # PUBLISH, QoS 1
    client._in_packet["packet"] = bytearray(b"\x00\x10sens")  # says a 16-byte topic, has 4

    assert client._handle_publish() == mqtt.MQTT_ERR_PROTOCOL


@pytest.mark.parametrize("length", [b"\x80\x80\x80\x80\x00", b"\x80"], ids=["five bytes", "cut short"])
def test_a_publish_whose_properties_length_is_malformed_drops_the_connection(length: bytes) -> None:
    # A variable byte integer has at most 4 bytes (MQTT 5, 1.5.5), as the packet's own length does.
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_raw_message = lambda *args: pytest.fail("a broken packet was delivered")
    client._in_packet["command"] = 0x32
    client._in_packet["packet"] = bytearray(b"\x00\x01t\x00\x07" + length)

    assert client._handle_publish() == mqtt.MQTT_ERR_PROTOCOL


def test_the_lean_path_hands_topic_payload_mid_and_qos_to_on_raw_message() -> None:
    received: list[tuple[bytes, bytes, int, int]] = []
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_raw_message = lambda *args: received.append(args)
    client.on_message = lambda *args: pytest.fail("paho's own path was taken")
    client._in_packet["command"] = 0x32
    client._in_packet["packet"] = publish_packet(b"sensors/5/readings", b"{}", mid=42, properties=b"")

    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    assert received == [(b"sensors/5/readings", b"{}", 42, 1)]


class EndlessBacklog:
    """A broker socket that always has more PUBLISH packets, cut at arbitrary points: a backlog streaming in."""

    def __init__(self, packet: bytes, chunks: int) -> None:
        self._stream = packet * (READ_CHUNK * chunks // len(packet) + 1)
        self._sent = 0
        self.reads = 0

    def recv(self, size: int) -> bytes:
        if self._sent >= len(self._stream):
            raise BlockingIOError  # only so that a loop that never stops ends this test
        self.reads += 1
        data = self._stream[self._sent : self._sent + size]
        self._sent += len(data)
        return data

    def close(self) -> None:
        """paho closes its socket when the client goes."""


def test_a_loop_turn_hands_over_at_most_one_read_while_a_backlog_streams_in() -> None:
    packet = b"\x32" + bytes(publish_packet(b"sensors/5/readings", b'{"v": 1}' * 10, mid=7, properties=b""))
    packet = packet[:1] + bytes([len(packet) - 1]) + packet[1:]  # fixed header: type, remaining length
    handed: list[int] = []
    received: list[bytes] = []
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_raw_message = lambda topic, payload, mid, qos: received.append(payload)
    client.on_read_end = lambda: handed.append(len(received))
    backlog = EndlessBacklog(packet, chunks=10)
    client._sock = BufferedSocket(backlog)

    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS

    per_read = READ_CHUNK // len(packet) + 1
    assert handed == [len(received)], "on_read_end once, after the packets of this turn"
    assert 0 < len(received) <= per_read + 1, "one socket read's worth, then the inbox gets them"
    assert backlog.reads <= 2
    while backlog.reads < 10:
        client.loop_read()
    assert max(b - a for a, b in zip([0, *handed], handed, strict=False)) <= per_read + 1
    assert all(payload == b'{"v": 1}' * 10 for payload in received), "no packet torn at a read's edge"


def test_ack_many_queues_the_pubacks_in_order_as_one_write() -> None:
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)

    client.ack_many([3, 1, 65535])
    client.ack_many([])

    (packet,) = client._out_packet
    assert bytes(packet["packet"]) == b"\x40\x02\x00\x03" + b"\x40\x02\x00\x01" + b"\x40\x02\xff\xff"


def test_paho_own_path_reaches_on_raw_message_and_leaves_the_read_end_to_loop_read() -> None:
    received: list[tuple[bytes, bytes, int, int]] = []
    ends: list[int] = []
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_raw_message = lambda *args: received.append(args)
    client.on_read_end = lambda: ends.append(len(received))
    message = mqtt.MQTTMessage(mid=8, topic=b"sensors/5/readings")
    message.payload, message.qos = b"{}", 2

    paho_delivers(client, message)  # what paho calls for QoS 2

    assert received == [(b"sensors/5/readings", b"{}", 8, 2)]
    assert ends == [], "loop_read() ends the read, once for all its packets"


def test_the_installed_paho_has_what_the_fast_path_needs() -> None:
    assert missing_internals() == []
    client = make_client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    assert isinstance(client, FastClient)


def test_a_paho_without_an_internal_gets_plain_paho_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    class Changed(mqtt.Client):
        def _packet_queue(self, packet: bytes) -> None:  # type: ignore[override]
            """A release whose internal takes other parameters."""

    monkeypatch.setattr(mqtt, "Client", Changed)  # the paho module the fast path checks

    with caplog.at_level(logging.WARNING, logger="bridge.mqtt.fastpath"):
        client = make_client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    assert type(client) is PlainClient
    assert [r.getMessage() for r in caplog.records] == [
        "paho-mqtt fast path off (missing: _packet_queue); using plain paho, which is slower per message"
    ]
    assert missing_internals(Changed) == ["_packet_queue"]
