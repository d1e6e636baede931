"""Where a message is received: the paho client, and the consumer's thin callbacks that validate and queue.

`make_client` gives the fast client (fastpath) or plain paho (client), both in
the one shape the consumer uses; `MqttConsumer` (consumer) queues what they
read onto the inbox and acknowledges what the pipeline committed.
"""

from __future__ import annotations

from bridge.mqtt.client import PlainClient
from bridge.mqtt.consumer import MqttConsumer
from bridge.mqtt.fastpath import make_client

__all__ = ["MqttConsumer", "PlainClient", "make_client"]
