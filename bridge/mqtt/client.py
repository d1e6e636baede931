"""The one client shape the consumer sees: raw messages in, a hand-over after each read, acks in one call.

Both paho clients the worker may run have it: PlainClient here, and FastClient
(bridge/mqtt/fastpath.py), which reads the socket in chunks and hands over what one
read brought. The consumer sets the two callbacks and calls ack_many(); it
never asks which of the two it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt

RawMessageHandler = Callable[[bytes, bytes, int, int], None]  # (topic, payload, mid, qos)


class PlainClient(mqtt.Client):
    """paho's Client as it is, in the consumer's shape: each message is a read of its own.

    paho's on_message goes to `on_raw_message` as (topic bytes, payload, mid,
    qos), then `on_read_end` follows at once, so the consumer queues every
    message as it comes. ack_many() acks one id after the other.
    """

    on_raw_message: RawMessageHandler | None = None
    on_read_end: Callable[[], None] | None = None  # after every message of one read was passed on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_message = self._pass_on

    def _pass_on(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's on_message: the message to on_raw_message, then the end of its read."""
        handler = self.on_raw_message
        if handler is not None:
            handler(_raw_topic(message), bytes(message.payload), message.mid, message.qos)
        self._message_read()

    def _message_read(self) -> None:
        """Plain paho reads one packet at a time: the read ends with its message."""
        if self.on_read_end is not None:
            self.on_read_end()

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK these QoS 1 messages, in this order, one by one."""
        for mid in mids:
            self.ack(mid, 1)


def _raw_topic(message: mqtt.MQTTMessage) -> bytes:
    """The topic as it came: paho decodes it on access, and a topic that is not UTF-8 would raise there."""
    try:
        return message.topic.encode("utf-8")
    except UnicodeDecodeError:
        return bytes(message._topic)
