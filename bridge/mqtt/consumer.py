"""The MQTT side: thin paho callbacks that validate, enqueue, and later acknowledge."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from bridge.inbox import Inbox
from bridge.model import Delivery, Parsed, Rejection
from bridge.mqtt.client import RawMessageHandler
from bridge.stats import Stats
from iotcommon.contract import RejectionCode, WorkerStatus, status_topic

logger = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 142  # MQTT v5 reason code: another client connected with our id


class MqttClient(Protocol):
    """The part of the client the consumer uses: paho's, plus the shape of bridge/mqtt/client.py.

    Messages come in through on_raw_message, are handed to the inbox at
    on_read_end, and go out acknowledged through ack_many(): the same three
    operations whether the client is FastClient or PlainClient.
    """

    on_pre_connect: Any
    on_connect: Any
    on_subscribe: Any
    on_raw_message: RawMessageHandler | None
    on_read_end: Callable[[], None] | None
    on_disconnect: Any

    def subscribe(self, topic: str, qos: int = ...) -> Any: ...

    def ack_many(self, mids: Iterable[int]) -> None: ...

    def publish(self, topic: str, payload: str | bytes, qos: int = ..., retain: bool = ...) -> Any: ...


Parser = Callable[[str, bytes, datetime], Parsed]


class MqttConsumer:
    """Feeds validated deliveries to the inbox and acks them when the pipeline says so.

    Acks go out only for messages of the current connection: after a
    reconnect the broker resends unacknowledged messages with the same ids,
    so acking an old id on the new connection could ack the wrong message.
    """

    def __init__(
        self,
        client: MqttClient,
        inbox: Inbox,
        *,
        client_id: str,
        subscription: str,
        parse: Parser,
        stats: Stats,
        now: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._client_id = client_id
        self._subscription = subscription
        self._parse = parse
        self._stats = stats
        self._now = now
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._accepting = True
        self.ready = threading.Event()
        self.refused: str | None = None
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        # What one read brought goes to the inbox at once: with the fast path one
        # lock for ~300 messages; with plain paho every message is a read of its own.
        self._held: list[Delivery] = []
        self._read_at: datetime | None = None
        client.on_raw_message = self._receive
        client.on_read_end = self._hand_over
        client.on_disconnect = self._on_disconnect

    def ack(self, batch: Sequence[Delivery]) -> int:
        """Acknowledge committed deliveries in order; skip those of earlier connections."""
        with self._lock:
            if not self._connected:
                return 0
            # We subscribe with QoS 1, so the broker sends QoS 0 or 1; QoS 0 needs no ack.
            mids = [d.mid for d in batch if d.qos == 1 and d.generation == self._generation]
            self._client.ack_many(mids)  # one write for the batch with the fast path
        return len(mids)

    def stop_accepting(self) -> None:
        """Leave further messages unacknowledged: the broker keeps them for our next session."""
        self._accepting = False

    def publish_status(self, status: WorkerStatus) -> Any:
        """Publish the retained status (online, or offline when stopping cleanly)."""
        return self._client.publish(status_topic(self._client_id), status.value, qos=1, retain=True)

    def _on_pre_connect(self, client: Any, userdata: Any) -> None:
        with self._lock:
            self._connected = False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            logger.error("broker refused the connection of %s: %s", self._client_id, reason_code)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
        # Deliveries of the previous connection still waiting here are stored
        # but never acknowledged (their ids may now name other messages). The
        # broker sends them again if it still has them; one restored from an
        # older save after a SIGKILL may not, so these copies are the only ones
        # left. A second copy costs a duplicate, which the key absorbs.
        kept = len(self._inbox)
        self.refused = None
        self._stats.mqtt_connected = True
        logger.info(
            "connected to broker as %s (session present: %s, %d messages of the previous connection kept)",
            self._client_id, flags.session_present, kept,
        )
        # Subscribing on every connect means a lost session resubscribes too.
        client.subscribe(self._subscription, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            self.refused = f"subscription to {self._subscription} refused: {failed[0]}"
            logger.error("broker refused subscription of %s to %s: %s", self._client_id, self._subscription, failed[0])
            return
        logger.info("%s subscribed to %s", self._client_id, self._subscription)
        self.publish_status(WorkerStatus.ONLINE)
        self.ready.set()

    def _receive(self, raw_topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        """The client's on_raw_message: validate, and hold until the read ends."""
        # Never let an exception escape: paho would stop its network loop.
        try:
            if not self._accepting:
                return
            # What one read of the socket brought shares one time of receipt.
            received_at = self._read_at or self._now()
            self._read_at = received_at
            self._stats.received += 1
            topic = raw_topic.decode("utf-8", "replace")
            parsed = self._safe_parse(topic, payload, received_at)
            self._held.append(Delivery(mid, qos, self._generation, topic, payload, received_at, parsed))
        except Exception:
            self._stats.handler_errors += 1
            logger.exception("could not queue message %s; the broker will resend it after a reconnect", mid)

    def _hand_over(self) -> None:
        """Queue what the last read of the socket brought, in one go (the client's on_read_end)."""
        held, self._held, self._read_at = self._held, [], None
        if not held:
            return
        self._stats.read_peak = max(self._stats.read_peak, len(held))
        try:
            self._inbox.put_many(held)
            self._stats.inbox_peak = self._inbox.peak
        except Exception:
            self._stats.handler_errors += 1
            logger.exception("could not queue %d messages (ids %d to %d); the broker will resend them after a "
                             "reconnect", len(held), held[0].mid, held[-1].mid)

    def _safe_parse(self, topic: str, payload: bytes, received_at: datetime) -> Parsed:
        try:
            return self._parse(topic, payload, received_at)
        except Exception as exc:
            self._stats.handler_errors += 1
            logger.exception("bug while validating a message on %s; storing it as rejected", topic)
            reason = f"internal error while validating ({type(exc).__name__}: {exc}); please report this"
            return Parsed(rejections=(Rejection(payload, RejectionCode.INTERNAL_ERROR, reason),))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
        self._stats.mqtt_connected = False
        if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            logger.error(
                "another client connected with id %s and took over the session; "
                "give every worker its own BRIDGE_CLIENT_ID", self._client_id,
            )
        elif self._accepting:
            logger.warning("%s disconnected from broker: %s; reconnecting", self._client_id, reason_code)
        else:
            logger.info("%s disconnected from broker: %s", self._client_id, reason_code)
