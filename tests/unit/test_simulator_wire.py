"""simulator/wire.py: the MQTT 3.1.1 packets of a device, byte for byte (OASIS MQTT 3.1.1, section 3)."""

from __future__ import annotations

import pytest

from simulator import wire


@pytest.mark.parametrize(("length", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_length_is_the_specs_variable_length_integer(length: int, encoded: bytes) -> None:
    assert wire.remaining_length(length) == encoded


def test_remaining_length_refuses_what_mqtt_cannot_carry() -> None:
    with pytest.raises(ValueError, match="longer than MQTT allows"):
        wire.remaining_length(268_435_456)


def test_connect_carries_the_client_id_credentials_keepalive_and_session_choice() -> None:
    packet = wire.connect_packet("device-7", username="device-7", password="pw", keepalive_s=60, clean_session=True)

    assert packet == (
        b"\x10\x22" b"\x00\x04MQTT" b"\x04" b"\xc2" b"\x00\x3c"
        b"\x00\x08device-7" b"\x00\x08device-7" b"\x00\x02pw"
    )
    persistent = wire.connect_packet("d", username=None, password=None, keepalive_s=30, clean_session=False)
    assert persistent[9] == 0x00  # no user name, no password, clean session off


def test_publish_is_qos_1_with_its_packet_id_and_dup_on_a_resend() -> None:
    first = wire.publish_packet("sensors/7/readings", b"{}", 513)
    again = wire.publish_packet("sensors/7/readings", b"{}", 513, dup=True)

    assert first == b"\x32\x18\x00\x12sensors/7/readings\x02\x01{}"
    assert again[0] == 0x3A and again[1:] == first[1:]
    with pytest.raises(ValueError, match="packet id 0"):
        wire.publish_packet("t", b"", 0)


def test_the_reader_splits_packets_however_the_bytes_arrive() -> None:
    stream = b"\x20\x02\x01\x00" + b"\x40\x02\x00\x07" + b"\xd0\x00"
    for cut in range(len(stream) + 1):
        reader = wire.PacketReader()
        packets = reader.feed(stream[:cut]) + reader.feed(stream[cut:])

        assert [p.kind for p in packets] == [wire.CONNACK, wire.PUBACK, wire.PINGRESP], cut
        assert packets[0].connack() == (True, 0)
        assert packets[1].packet_id() == 7


def test_a_refusing_connack_and_malformed_input_are_told_apart() -> None:
    (refused,) = wire.PacketReader().feed(b"\x20\x02\x00\x05")
    assert refused.connack() == (False, 5) and wire.CONNACK_REASONS[5] == "not authorized"
    with pytest.raises(wire.ProtocolError, match="expected a CONNACK"):
        wire.Packet(wire.PUBACK, 0, b"\x00\x01").connack()
    with pytest.raises(wire.ProtocolError, match="malformed remaining length"):
        wire.PacketReader().feed(b"\x40\xff\xff\xff\xff\x01")
