"""The MQTT side, driven through paho's callbacks on a fake client (telegraf's fakeClient idea),
and through the two real clients' hand-over to the inbox (no broker: a fake socket, paho's own callback)."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fakes import FakeClock, paho_delivers
from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from bridge.inbox import Inbox
from bridge.model import Delivery, Parsed, Rejection, Row
from bridge.mqtt.client import PlainClient
from bridge.mqtt.consumer import MqttConsumer
from bridge.mqtt.fastpath import BufferedSocket, FastClient
from bridge.stats import Stats
from iotcommon.contract import RejectionCode, WorkerStatus

SUBSCRIPTION = "$share/bridge/sensors/+/readings"


class FakeClient:
    """The callback attributes the consumer's client shape has, and a record of what the consumer asked of it."""

    def __init__(self) -> None:
        self.on_pre_connect: Any = None
        self.on_connect: Any = None
        self.on_subscribe: Any = None
        self.on_raw_message: Any = None
        self.on_read_end: Any = None
        self.on_disconnect: Any = None
        self.subscribed: list[tuple[str, int]] = []
        self.acked: list[int] = []
        self.ack_calls = 0
        self.published: list[tuple[str, str | bytes, int, bool]] = []

    def subscribe(self, topic: str, qos: int = 0) -> tuple[int, int]:
        self.subscribed.append((topic, qos))
        return 0, len(self.subscribed)

    def ack_many(self, mids: Iterable[int]) -> None:
        self.ack_calls += 1
        self.acked.extend(mids)

    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> str:
        self.published.append((topic, payload, qos, retain))
        return f"info-{len(self.published)}"

    # What paho's network thread does, in paho's own argument order.

    def connect(self, *, session_present: bool = False, reason: str = "Success") -> None:
        self.on_pre_connect(self, None)
        code = ReasonCode(PacketTypes.CONNACK, reason)
        self.on_connect(self, None, ConnectFlags(session_present=session_present), code, None)

    def suback(self, *reasons: str) -> None:
        codes = [ReasonCode(PacketTypes.SUBACK, reason) for reason in reasons or ("Granted QoS 1",)]
        self.on_subscribe(self, None, len(self.subscribed), codes, None)

    def deliver(self, mid: int, payload: bytes = b"{}", *, topic: bytes = b"sensors/5/readings", qos: int = 1) -> None:
        """One message that one read of the socket brought."""
        self.deliver_read([mid], payload, topic=topic, qos=qos)

    def deliver_read(
        self, mids: Sequence[int], payload: bytes = b"{}", *, topic: bytes = b"sensors/5/readings", qos: int = 1,
    ) -> None:
        """The messages one read of the socket brought, then the end of that read."""
        for mid in mids:
            self.on_raw_message(topic, payload, mid, qos)
        self.on_read_end()

    def disconnect(self, reason: str = "Unspecified error") -> None:
        code = ReasonCode(PacketTypes.DISCONNECT, reason)
        self.on_disconnect(self, None, DisconnectFlags(is_disconnect_packet_from_server=True), code, None)


class Harness:
    def __init__(self, *, parse: Any = None, inbox: Inbox | None = None) -> None:
        self.client = FakeClient()
        self.inbox = inbox if inbox is not None else Inbox()
        self.stats = Stats()
        self.parsed: list[tuple[str, bytes, datetime]] = []
        self.consumer = MqttConsumer(
            self.client,
            self.inbox,
            client_id="w1",
            subscription=SUBSCRIPTION,
            parse=parse or self._parse,
            stats=self.stats,
            now=FakeClock(step_s=0.001).now,  # each message a millisecond after the one before
        )

    def _parse(self, topic: str, payload: bytes, at: datetime) -> Parsed:
        self.parsed.append((topic, payload, at))
        return Parsed(rows=(Row(5, at, "t", 1.0, "C"),), indexes=(0,))

    def queued(self) -> list[Delivery]:
        return self.inbox.take(10_000, 0.0)


class CountingInbox(Inbox):
    """An inbox that records how many deliveries each hand-over brought."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def put_many(self, deliveries: Sequence[Delivery]) -> None:
        self.calls.append(len(deliveries))
        super().put_many(deliveries)


def spy(handler: Any, before: Any) -> Any:
    """`handler`, calling `before()` first."""
    def wrapped(*args: Any) -> None:
        before()
        handler(*args)
    return wrapped


@pytest.fixture
def harness() -> Harness:
    return Harness()


# --- connecting and subscribing ---------------------------------------------------------------


def test_connect_subscribes_to_the_shared_subscription_with_qos_1(harness: Harness) -> None:
    harness.client.connect()

    assert harness.client.subscribed == [(SUBSCRIPTION, 1)]
    assert harness.stats.mqtt_connected is True
    assert harness.consumer.refused is None


def test_resubscribe_on_reconnect(harness: Harness) -> None:
    harness.client.connect()
    harness.client.disconnect()
    harness.client.connect(session_present=True)
    harness.client.disconnect()
    harness.client.connect(session_present=False)

    assert harness.client.subscribed == [(SUBSCRIPTION, 1)] * 3


def test_suback_publishes_retained_online_and_sets_ready(harness: Harness) -> None:
    harness.client.connect()
    assert not harness.consumer.ready.is_set()

    harness.client.suback("Granted QoS 1")

    assert harness.client.published == [("bridge/status/w1", "online", 1, True)]
    assert harness.consumer.ready.is_set()


def test_refused_subscription_is_reported_and_not_ready(harness: Harness) -> None:
    harness.client.connect()

    harness.client.suback("Not authorized")

    assert harness.consumer.refused is not None
    assert SUBSCRIPTION in harness.consumer.refused
    assert "Not authorized" in harness.consumer.refused
    assert not harness.consumer.ready.is_set()
    assert harness.client.published == []


def test_refused_connect_is_reported(harness: Harness) -> None:
    harness.client.connect(reason="Not authorized")

    assert harness.consumer.refused == "Not authorized"
    assert harness.client.subscribed == []
    assert harness.stats.mqtt_connected is False
    assert harness.consumer.ready.is_set() is False


def test_successful_connect_clears_an_earlier_refusal(harness: Harness) -> None:
    harness.client.connect(reason="Server unavailable")
    harness.client.connect()

    assert harness.consumer.refused is None


def test_publish_status_is_retained_at_qos_1_on_the_status_topic(harness: Harness) -> None:
    assert harness.consumer.publish_status(WorkerStatus.OFFLINE) == "info-1"
    assert harness.client.published == [("bridge/status/w1", "offline", 1, True)]


# --- receiving --------------------------------------------------------------------------------


def test_message_is_validated_and_queued_with_the_current_generation(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(7, b'{"x": 1}')
    harness.client.disconnect()
    harness.client.connect()
    harness.client.deliver(7, b'{"x": 2}')

    first, second = harness.queued()

    assert (first.mid, first.qos, first.topic, first.payload) == (7, 1, "sensors/5/readings", b'{"x": 1}')
    assert (first.generation, second.generation) == (1, 2)
    assert harness.parsed[0] == ("sensors/5/readings", b'{"x": 1}', first.received_at)
    assert first.parsed.rows[0].timestamp == first.received_at
    assert first.received_at < second.received_at
    assert harness.stats.received == 2


def test_what_one_read_brought_is_queued_together_at_the_end_of_the_read() -> None:
    inbox = CountingInbox()
    harness = Harness(inbox=inbox)
    harness.client.connect()
    taken_before_the_end: list[int] = []
    harness.client.on_raw_message = spy(harness.client.on_raw_message, lambda: taken_before_the_end.append(len(inbox)))

    harness.client.deliver_read([4, 5, 6])

    queued = harness.queued()
    assert taken_before_the_end == [0, 0, 0], "nothing reaches the inbox before the read ends"
    assert [d.mid for d in queued] == [4, 5, 6]
    assert inbox.calls == [3], "one hand-over for the read"
    assert len({d.received_at for d in queued}) == 1, "a read's messages share one time of receipt"
    assert harness.stats.read_peak == 3
    assert harness.stats.inbox_peak == 3


def test_a_read_that_brought_nothing_queues_nothing() -> None:
    inbox = CountingInbox()
    harness = Harness(inbox=inbox)
    harness.client.connect()

    harness.client.deliver_read([])

    assert inbox.calls == []
    assert harness.stats.read_peak == 0


def test_bug_in_the_parser_stays_inside_on_message(caplog: pytest.LogCaptureFixture) -> None:
    def broken_parse(topic: str, payload: bytes, at: datetime) -> Parsed:
        raise KeyError("oops")

    harness = Harness(parse=broken_parse)
    harness.client.connect()

    with caplog.at_level(logging.ERROR, logger="bridge.mqtt.consumer"):
        harness.client.deliver(3, b"raw bytes")

    (queued,) = harness.queued()
    assert queued.parsed.rows == ()
    assert queued.parsed.rejections == (
        Rejection(b"raw bytes", RejectionCode.INTERNAL_ERROR, queued.parsed.rejections[0].reason),
    )
    assert "internal error" in queued.parsed.rejections[0].reason
    assert "KeyError" in queued.parsed.rejections[0].reason
    assert harness.stats.handler_errors == 1
    assert any(record.exc_info for record in caplog.records)


def test_failure_to_queue_stays_inside_on_message(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenInbox(Inbox):
        def put_many(self, deliveries: Sequence[Delivery]) -> None:
            raise RuntimeError("inbox broken")

    harness = Harness(inbox=BrokenInbox())
    harness.client.connect()

    with caplog.at_level(logging.ERROR, logger="bridge.mqtt.consumer"):
        harness.client.deliver(4)

    assert harness.stats.handler_errors == 1
    assert "could not queue 1 messages (ids 4 to 4)" in caplog.text


def test_stop_accepting_queues_nothing_more(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(1)

    harness.consumer.stop_accepting()
    harness.client.deliver(2)
    harness.client.deliver(3)

    assert [d.mid for d in harness.queued()] == [1]
    assert harness.stats.received == 1
    assert harness.client.acked == []


def test_topic_that_is_not_utf8_is_still_queued(harness: Harness) -> None:
    harness.client.connect()

    harness.client.deliver(5, topic=b"sensors/\xff/readings")

    (queued,) = harness.queued()
    assert queued.topic == "sensors/\ufffd/readings"
    assert harness.stats.handler_errors == 0


# --- acknowledging ----------------------------------------------------------------------------


def test_ack_goes_out_in_the_order_given(harness: Harness) -> None:
    harness.client.connect()
    for mid in (11, 12, 13):
        harness.client.deliver(mid)

    acked = harness.consumer.ack(harness.queued())

    assert acked == 3
    assert harness.client.acked == [11, 12, 13]
    assert harness.client.ack_calls == 1, "the batch's acks in one call"


def test_qos_0_messages_are_not_acked(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(0, qos=0)
    harness.client.deliver(21, qos=1)

    assert harness.consumer.ack(harness.queued()) == 1
    assert harness.client.acked == [21]


def test_ack_after_reconnect_skips_deliveries_of_the_old_connection(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(1)
    harness.client.deliver(2)
    harness.client.disconnect()
    harness.client.connect(session_present=False)
    harness.client.deliver(1)  # the same packet id, on the new connection: a different message
    harness.client.deliver(3)

    batch = harness.queued()
    acked = harness.consumer.ack(batch)

    assert [(d.mid, d.generation) for d in batch] == [(1, 1), (2, 1), (1, 2), (3, 2)]
    assert acked == 2
    assert harness.client.acked == [1, 3]


def test_nothing_is_acked_while_disconnected(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(1)
    batch = harness.queued()

    harness.client.disconnect()

    assert harness.consumer.ack(batch) == 0
    assert harness.client.acked == []


def test_nothing_is_acked_between_pre_connect_and_connack(harness: Harness) -> None:
    harness.client.connect()
    harness.client.deliver(1)
    batch = harness.queued()

    harness.client.on_pre_connect(harness.client, None)  # reconnecting: CONNACK not yet received

    assert harness.consumer.ack(batch) == 0
    assert harness.client.acked == []


@pytest.mark.parametrize("session_present", [True, False])
def test_a_reconnect_keeps_old_deliveries_for_storing_but_acks_only_new_ones(
    harness: Harness, session_present: bool
) -> None:
    harness.client.connect()
    harness.client.deliver(1)
    harness.client.deliver(2)
    harness.client.disconnect()

    harness.client.connect(session_present=session_present)
    harness.client.deliver(1)
    batch = harness.queued()

    assert [(d.mid, d.generation) for d in batch] == [(1, 1), (2, 1), (1, 2)]
    assert harness.consumer.ack(batch) == 1
    assert harness.client.acked == [1]


# --- disconnecting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "stopping", "level", "text"),
    [
        ("Session taken over", False, logging.ERROR, "BRIDGE_CLIENT_ID"),
        ("Unspecified error", False, logging.WARNING, "reconnecting"),
        ("Normal disconnection", True, logging.INFO, "disconnected from broker"),
    ],
)
def test_disconnect_is_logged_by_cause(
    harness: Harness, caplog: pytest.LogCaptureFixture, reason: str, stopping: bool, level: int, text: str
) -> None:
    harness.client.connect()
    if stopping:
        harness.consumer.stop_accepting()

    with caplog.at_level(logging.INFO, logger="bridge.mqtt.consumer"):
        harness.client.disconnect(reason)

    (record,) = [r for r in caplog.records if "disconnect" in r.getMessage() or "took over" in r.getMessage()]
    assert record.levelno == level
    assert text in record.getMessage()
    assert "w1" in record.getMessage()
    assert harness.stats.mqtt_connected is False


# --- the two real clients, handing over to the inbox ------------------------------------------


def publish(mid: int, payload: bytes, *, topic: bytes = b"sensors/5/readings") -> bytes:
    """A whole MQTT 5 QoS 1 PUBLISH packet, as the broker sends it (no properties)."""
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + b"\x00" + payload
    return bytes([0x32, len(body)]) + body


class OneRead:
    """A broker socket that has these bytes for one read, then nothing more yet."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.reads = 0

    def recv(self, size: int) -> bytes:
        if self.reads:
            raise BlockingIOError
        self.reads += 1
        return self._data[:size]

    def close(self) -> None:
        """paho closes its socket when the client goes."""


def consumer_on(client: Any, inbox: Inbox, stats: Stats) -> MqttConsumer:
    return MqttConsumer(client, inbox, client_id="w1", subscription=SUBSCRIPTION,
                        parse=lambda topic, payload, at: Parsed(rows=(Row(5, at, "t", 1.0, "C"),), indexes=(0,)),
                        stats=stats, now=FakeClock(step_s=0.001).now)


def test_the_fast_client_hands_a_whole_read_to_the_inbox_in_one_go() -> None:
    client = FastClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    inbox, stats = CountingInbox(), Stats()
    consumer_on(client, inbox, stats)
    sock = OneRead(b"".join(publish(mid, b'{"v": %d}' % mid) for mid in (31, 32, 33)))
    client._sock = BufferedSocket(sock)

    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS

    queued = inbox.take(100, 0.0)
    assert [(d.mid, d.payload, d.topic) for d in queued] == [
        (31, b'{"v": 31}', "sensors/5/readings"), (32, b'{"v": 32}', "sensors/5/readings"),
        (33, b'{"v": 33}', "sensors/5/readings"),
    ]
    assert inbox.calls == [3], "one hand-over for the read, not one per message"
    assert stats.received == 3
    assert stats.read_peak == 3
    assert sock.reads == 1


def test_the_plain_client_hands_each_message_to_the_inbox_as_it_comes() -> None:
    client = PlainClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    inbox, stats = CountingInbox(), Stats()
    consumer_on(client, inbox, stats)

    for mid, topic in ((41, b"sensors/5/readings"), (42, b"sensors/\xff/readings")):
        message = MQTTMessage(mid=mid, topic=topic)
        message.payload, message.qos = b"{}", 1
        paho_delivers(client, message)  # what paho's network thread calls

    queued = inbox.take(100, 0.0)
    assert [(d.mid, d.topic) for d in queued] == [(41, "sensors/5/readings"), (42, "sensors/\ufffd/readings")]
    assert inbox.calls == [1, 1], "plain paho reads one message at a time"
    assert queued[0].received_at < queued[1].received_at
    assert stats.handler_errors == 0
