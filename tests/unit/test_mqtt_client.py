"""bridge.mqtt.client: plain paho in the consumer's shape (raw messages, a read end per message, acks in one call)."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from fakes import paho_delivers
from paho.mqtt.enums import CallbackAPIVersion

from bridge.mqtt.client import PlainClient


def plain_client() -> PlainClient:
    return PlainClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)


def message(mid: int, topic: bytes, payload: bytes = b"{}", qos: int = 1) -> mqtt.MQTTMessage:
    made = mqtt.MQTTMessage(mid=mid, topic=topic)
    made.payload, made.qos = payload, qos
    return made


def test_each_message_goes_to_on_raw_message_and_ends_its_read() -> None:
    events: list[object] = []
    client = plain_client()
    client.on_raw_message = lambda *args: events.append(args)
    client.on_read_end = lambda: events.append("end")

    paho_delivers(client, message(3, b"sensors/5/readings", b'{"v": 1}'))
    paho_delivers(client, message(4, b"sensors/6/readings", qos=0))

    assert events == [(b"sensors/5/readings", b'{"v": 1}', 3, 1), "end", (b"sensors/6/readings", b"{}", 4, 0), "end"]


def test_a_topic_that_is_not_utf8_is_passed_on_as_it_came() -> None:
    received: list[bytes] = []
    client = plain_client()
    client.on_raw_message = lambda topic, payload, mid, qos: received.append(topic)

    paho_delivers(client, message(5, b"sensors/\xff/readings"))

    assert received == [b"sensors/\xff/readings"]


def test_ack_many_acks_one_by_one_in_order() -> None:
    acked: list[tuple[int, int]] = []
    client = plain_client()
    client.ack = lambda mid, qos: acked.append((mid, qos))  # type: ignore[method-assign,assignment,return-value]

    client.ack_many([5, 6, 2])

    assert acked == [(5, 1), (6, 1), (2, 1)]
