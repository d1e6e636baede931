"""Publishing with a fake paho client: every message confirmed once, honest counts through reconnects."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fakes import FakeClock
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from simulator.pacing import Pacer
from simulator.publisher import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS, Publisher
from simulator.readings import Kind, MessageFactory
from simulator.tracker import Tracker

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
OK = ReasonCode(PacketTypes.PUBACK, identifier=0)
QUOTA_EXCEEDED = ReasonCode(PacketTypes.PUBACK, identifier=0x97)
CONNACK_OK = ReasonCode(PacketTypes.CONNACK, identifier=0)
CONN_LOST = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)


@dataclass
class Info:
    mid: int
    rc: int


class FakeBroker:
    """A fake paho client: records publishes; `auto_ack` answers each one at once, like a fast broker.

    With auto_ack the PUBACK arrives inside publish(), before the publisher
    has recorded the message id: the race paho's network thread can cause.
    """

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_publish: Any = None
        self.auto_ack = auto_ack
        self.connected = True
        self.refuse: set[int] = set()  # message indexes to refuse once with QUOTA_EXCEEDED
        self.sent: list[tuple[int, bytes]] = []  # (mid, payload)
        self._mids = itertools.count(1)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Info:
        mid = next(self._mids)
        self.sent.append((mid, payload))
        if self.connected and self.auto_ack:
            self.ack(mid)
        return Info(mid, MQTT_ERR_SUCCESS if self.connected else MQTT_ERR_NO_CONN)

    def ack(self, mid: int, reason: ReasonCode = OK) -> None:
        self.on_publish(self, None, mid, reason, None)

    def drop_connection(self) -> None:
        self.connected = False
        self.on_disconnect(self, None, DisconnectFlags(is_disconnect_packet_from_server=False), CONN_LOST, None)

    def reconnect(self) -> None:
        self.connected = True
        self.on_connect(self, None, ConnectFlags(session_present=False), CONNACK_OK, None)


def make_publisher(broker: FakeBroker, messages: int, **kwargs: Any) -> tuple[Publisher, MessageFactory]:
    factory = MessageFactory([Kind.UNIQUE] * messages, sensors=5, array=1, run_id="rtest", seed=1)
    clock = FakeClock(step_s=kwargs.pop("clock_step", 0.001))  # deadlines pass in a few polls
    publisher = Publisher(
        broker, factory, pacer=Pacer(clock, interval_s=0.0), clock=clock, wall=lambda: NOW,
        confirm_timeout_s=kwargs.pop("confirm_timeout_s", 5.0), **kwargs,
    )
    broker.reconnect()  # the first CONNACK
    return publisher, factory


def test_every_message_confirmed_once_even_when_the_puback_beats_publish_returning() -> None:
    broker = FakeBroker(auto_ack=True)
    publisher, _ = make_publisher(broker, 200)
    result = publisher.run()
    tally = result.tally
    assert (tally.published, tally.confirmed, tally.failed, tally.resent, tally.reconnects) == (200, 200, 0, 0, 0)
    assert len(tally.puback_latencies_s) == 200
    assert min(tally.puback_latencies_s) > 0  # measured from before publish(), even for an early PUBACK
    assert len(broker.sent) == 200 and len(result.published_at) == 200


class DroppingBroker(FakeBroker):
    """Confirms 20 messages, leaves 10 unconfirmed, loses the connection, comes back at the 35th."""

    def __init__(self) -> None:
        super().__init__(auto_ack=False)
        self.unacked: list[int] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Info:
        info = super().publish(topic, payload, qos)
        self.unacked.append(info.mid)
        if len(self.sent) <= 20:
            self.ack(self.unacked.pop())
        elif len(self.sent) < 30:
            pass
        elif len(self.sent) == 30:
            self.drop_connection()
        elif len(self.sent) == 35:
            self.reconnect()
            # paho sends the unconfirmed messages again with their old ids;
            # the broker confirms each (one twice: a PUBACK lost and resent).
            for mid in self.unacked:
                self.ack(mid)
            self.ack(self.unacked[0])
            self.unacked = []
        elif self.connected:
            self.ack(self.unacked.pop())
        return info


def test_a_dropped_connection_is_counted_and_every_message_confirmed_exactly_once() -> None:
    broker = DroppingBroker()
    publisher, _ = make_publisher(broker, 50)
    tally = publisher.run().tally
    assert tally.reconnects == 1
    assert tally.resent == 14  # 10 unconfirmed when it dropped + 4 published while disconnected
    assert (tally.published, tally.confirmed, tally.failed) == (50, 50, 0)
    assert len(tally.puback_latencies_s) == 50
    assert min(tally.puback_latencies_s) > 0


def test_a_refused_message_is_published_again_with_the_same_bytes() -> None:
    broker = FakeBroker(auto_ack=False)
    publisher, _ = make_publisher(broker, 3)
    original = broker.publish

    def publish(topic: str, payload: bytes, qos: int = 0) -> Info:
        info = original(topic, payload, qos)
        broker.ack(info.mid, QUOTA_EXCEEDED if len(broker.sent) == 2 else OK)
        return info

    broker.publish = publish  # type: ignore[method-assign]
    tally = publisher.run().tally
    assert (tally.published, tally.confirmed, tally.failed, tally.resent) == (3, 3, 0, 1)
    assert broker.sent[1][1] == broker.sent[2][1]  # message 1 again, before message 2


def test_a_message_never_confirmed_is_counted_as_failed_after_the_timeout() -> None:
    broker = FakeBroker(auto_ack=False)
    publisher, _ = make_publisher(broker, 4, confirm_timeout_s=2.0, clock_step=0.5)
    original = broker.publish

    def publish(topic: str, payload: bytes, qos: int = 0) -> Info:
        info = original(topic, payload, qos)
        if len(broker.sent) != 3:
            broker.ack(info.mid)
        return info

    broker.publish = publish  # type: ignore[method-assign]
    tally = publisher.run().tally
    assert (tally.published, tally.confirmed, tally.failed) == (4, 3, 1)


def test_tracker_gives_up_after_max_attempts_and_ignores_late_acks_of_old_ids() -> None:
    tracker = Tracker(max_attempts=2)
    tracker.sent(1, 0, at_s=0.0)
    tracker.confirmed(1, ok=False, at_s=0.1)
    assert tracker.take_retries() == [(0, 0.0, 1)]
    tracker.sent(2, 0, at_s=0.2, first_sent_at=0.0, attempts=2)
    tracker.confirmed(2, ok=False, at_s=0.3)
    assert tracker.take_retries() == []
    assert (tracker.tally.failed, tracker.tally.confirmed, tracker.outstanding) == (1, 0, 0)


def test_tracker_counts_a_message_confirmed_under_two_ids_once() -> None:
    tracker = Tracker()
    tracker.sent(7, 3, at_s=1.0)
    tracker.confirmed(7, ok=False, at_s=1.5)
    index, first, attempts = tracker.take_retries()[0]
    tracker.sent(8, index, at_s=2.0, first_sent_at=first, attempts=attempts + 1)
    tracker.confirmed(8, ok=True, at_s=2.5)
    tracker.confirmed(7, ok=True, at_s=2.6)  # a stale id: not known any more, kept as early and never claimed
    assert tracker.tally.confirmed == 1
    assert tracker.tally.puback_latencies_s == [1.5]  # from the first send, so outages count
    assert tracker.give_up_outstanding() == 0
