"""A small blocking MQTT v5 client for tests and benchmarks."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from iotcommon.contract import HEARTBEAT_PREFIX, Heartbeat, client_id_of, parse_heartbeat


class MqttTestError(Exception):
    """An MQTT operation of the test client failed or timed out."""


class MqttTestClient:
    """A small blocking MQTT v5 client for tests: publish with PUBACKs, subscribe, collect."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self._address = (host, port)
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        # No limit on paho's queue (0), so publish_many never gets "queue full";
        # in flight at most the broker's Receive Maximum (max_inflight_messages
        # in mosquitto.conf), which an MQTT v5 client must not exceed.
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_file is not None:  # TLS, trusting only this CA (paho checks the host name too)
            self._client.tls_set(ca_certs=ca_file)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Condition()

    @classmethod
    def from_url(
        cls, url: str, *, client_id: str | None = None, clean_start: bool = True,
        session_expiry_s: int = 0, ca_file: str | None = None,
    ) -> MqttTestClient:
        """Build a client for an mqtt://[user:password@]host:port URL (mqtts:// needs `ca_file`)."""
        parts = urlsplit(url)
        scheme = "mqtts" if ca_file else "mqtt"
        if parts.scheme != scheme or not parts.hostname:
            raise ValueError(f"expected {scheme}://[user:password@]host:port, got {parts.hostname!r}")
        return cls(
            parts.hostname, parts.port or (8883 if ca_file else 1883), client_id=client_id, clean_start=clean_start,
            session_expiry_s=session_expiry_s, ca_file=ca_file,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self, timeout: float = 10.0) -> Self:
        """Connect and wait for a successful CONNACK; return self."""
        # Properties.__init__ has no annotations in paho 2.2.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect(
            *self._address, keepalive=30, clean_start=self._clean_start, properties=properties
        )
        self._client.loop_start()
        try:
            reason = self._connack.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise MqttTestError(f"no CONNACK from {self._address} within {timeout} s") from None
        if reason.is_failure:
            self.close()
            raise MqttTestError(f"broker {self._address} refused the connection: {reason}")
        return self

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish one message and wait until the broker acknowledged it (for QoS > 0)."""
        self.publish_many([(topic, payload)], qos=qos, retain=retain, timeout=timeout)

    def publish_many(
        self, messages: Iterable[tuple[str, bytes | str]], *, qos: int = 1,
        retain: bool = False, timeout: float = 60.0,
    ) -> int:
        """Publish all messages and wait for every PUBACK; return how many were published."""
        deadline = time.monotonic() + timeout
        count = 0
        pending = iter(messages)
        # Windows of 500: paho scans all its unacknowledged messages on every
        # PUBACK, so a short list keeps 10,000 messages at about 2 s.
        while window := list(itertools.islice(pending, 500)):
            infos = [self._client.publish(t, p, qos=qos, retain=retain) for t, p in window]
            for info in infos:
                try:
                    info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
                except (RuntimeError, ValueError) as exc:  # paho: the connection is gone, or the message refused
                    raise MqttTestError(f"publish failed (mid {info.mid}): {exc}") from exc
                if not info.is_published():
                    raise MqttTestError(f"PUBACK missing after {timeout} s (mid {info.mid})")
            count += len(infos)
        return count

    def subscribe(self, topic: str, *, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for a successful SUBACK."""
        result, mid = self._client.subscribe(topic, qos=qos)
        if mid is None or result != mqtt.MQTT_ERR_SUCCESS:
            reason = mqtt.error_string(result)
            raise MqttTestError(f"could not send SUBSCRIBE for {topic!r}: {reason}")
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._subacks, timeout):
                raise MqttTestError(f"no SUBACK for {topic!r} within {timeout} s")
            reasons = self._subacks.pop(mid)
        if any(reason.is_failure for reason in reasons):
            raise MqttTestError(f"subscription to {topic!r} refused: {reasons}")

    def received(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        """Messages received so far, oldest first, optionally only those on `topic`."""
        with self._lock:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def wait_for_messages(
        self, count: int, *, topic: str | None = None, timeout: float = 10.0
    ) -> list[mqtt.MQTTMessage]:
        """Wait until at least `count` messages (on `topic`) arrived, and return them all."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.received(topic)) >= count, timeout)
        messages = self.received(topic)
        if len(messages) < count:
            raise MqttTestError(f"got {len(messages)} of {count} messages within {timeout} s")
        return messages

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
        reason: ReasonCode, properties: Properties | None,
    ) -> None:
        self._connack.put(reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int,
        reasons: list[ReasonCode], properties: Properties | None,
    ) -> None:
        with self._lock:
            self._subacks[mid] = reasons
            self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()


class BackgroundPublisher:
    """Publishes messages in chunks from a thread, so a fault can land mid-run."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]], *, chunk: int = 250) -> None:
        self._url = url
        self._messages = messages
        self._chunk = chunk
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether it is still publishing."""
        return self._thread.is_alive()

    def join(self, timeout: float = 180.0) -> None:
        """Wait until every message has its PUBACK; fail the test if publishing failed or hung."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"publisher did not finish within {timeout} s"
        assert not self._errors, f"publisher failed: {self._errors!r}"

    def _run(self) -> None:
        try:
            with MqttTestClient.from_url(self._url) as client:
                for start in range(0, len(self._messages), self._chunk):
                    client.publish_many(self._messages[start : start + self._chunk], timeout=120)
        except BaseException as exc:
            self._errors.append(exc)
            raise


class PacedPublisher:
    """Publishes messages at a steady rate from a thread, one PUBACK at a time, noting when each was sent.

    hold() disconnects it and release() lets it go on (after a broker restart,
    say): the messages due meanwhile follow at once. `published_at[i]` is the
    wall-clock time (time.time()) at which message i was handed to the broker.
    """

    def __init__(self, url: str, messages: list[tuple[str, bytes]], *, rate_per_s: float) -> None:
        self._url = url
        self._messages = messages
        self._interval_s = 1.0 / rate_per_s
        self.published_at: list[float | None] = [None] * len(messages)
        self._open = threading.Event()
        self._open.set()
        self._idle = threading.Event()  # set while held and disconnected
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="paced-publisher", daemon=True)
        self._thread.start()

    def hold(self, timeout: float = 30.0) -> None:
        """Stop publishing and disconnect; return once disconnected."""
        self._idle.clear()
        self._open.clear()
        if not self._idle.wait(timeout):
            raise MqttTestError(f"publisher still busy {timeout} s after hold()")

    def release(self) -> None:
        """Connect again and go on publishing."""
        self._open.set()

    def join(self, timeout: float = 600.0) -> None:
        """Wait until every message has its PUBACK; fail if publishing failed or hung."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            raise AssertionError(f"paced publisher did not finish within {timeout} s")
        assert not self._errors, f"paced publisher failed: {self._errors!r}"

    def _run(self) -> None:
        client: MqttTestClient | None = None
        due = time.monotonic()
        try:
            for index, (topic, payload) in enumerate(self._messages):
                if not self._open.is_set():
                    if client is not None:
                        client.close()
                        client = None
                    self._idle.set()
                    self._open.wait()
                if self._stop.is_set():
                    return
                due = max(due + self._interval_s, time.monotonic() - 1.0)  # catch up, but not in one burst
                self._stop.wait(max(0.0, due - time.monotonic()))
                if client is None:
                    client = MqttTestClient.from_url(self._url).connect()
                self.published_at[index] = time.time()
                client.publish(topic, payload, timeout=60)
        except BaseException as exc:
            self._errors.append(exc)
            raise
        finally:
            if client is not None:
                client.close()
            self._idle.set()


def heartbeats_of(client: MqttTestClient, client_ids: set[str]) -> list[Heartbeat]:
    """Heartbeats `client` received from these workers only (other tests' workers left retained ones), in order.

    Each is the contract's, typed; a payload that is not raises MalformedHeartbeat.
    """
    ours = (m.payload for m in client.received() if client_id_of(m.topic, HEARTBEAT_PREFIX) in client_ids)
    return [beat for payload in ours if (beat := parse_heartbeat(bytes(payload))) is not None]
