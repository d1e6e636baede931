"""The watchdog's one long-lived MQTT connection: bridge status and heartbeats, $SYS, and the probe.

paho callbacks only record what arrived, under a lock; checks.py judges it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from iotcommon.contract import (
    HEARTBEAT_FILTER,
    HEARTBEAT_PREFIX,
    SITE_BRIDGE_STATES,
    STATUS_FILTER,
    STATUS_PREFIX,
    Heartbeat,
    LinkState,
    MalformedHeartbeat,
    WorkerStatus,
    client_id_of,
    parse_heartbeat,
    probe_topic,
    site_bridge_of,
)
from watchdog.checks import LinkView, WorkerView

logger = logging.getLogger(__name__)
# Mosquitto 2.0 publishes it (retained) every sys_interval (10 s by default), when it changed.
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class MqttClient(Protocol):
    """The part of paho.mqtt.client.Client the watcher uses."""

    on_connect: Any
    on_subscribe: Any
    on_message: Any
    on_disconnect: Any

    def subscribe(self, topic: list[tuple[str, int]]) -> Any: ...

    def publish(self, topic: str, payload: str | bytes, qos: int = ..., retain: bool = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class Observations:
    """A consistent copy of what the watcher knows."""

    views: dict[str, WorkerView]
    dropped: int | None
    listening_since: datetime | None  # when the current subscription began; None if not subscribed
    links: dict[str, LinkView] = field(default_factory=dict)  # site bridges' link states, by name


class BrokerWatcher:
    """Subscribes on every connect, records retained and live messages, and round-trips probes."""

    def __init__(
        self, client: MqttClient, *, client_id: str, broker: str, now: Callable[[], datetime]
    ) -> None:
        self._client = client
        self._client_id = client_id
        self._broker = broker
        self._now = now
        self._lock = threading.Condition()
        self._views: dict[str, WorkerView] = {}
        self._dropped: int | None = None
        self._links: dict[str, LinkView] = {}
        self._listening_since: datetime | None = None
        self._subscribe_mid: int | None = None
        self._echoes: set[str] = set()
        self._last_problem = "not connected yet"
        self._was_connected = False
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect

    def observations(self) -> Observations:
        """Worker views, the dropped counter and the subscription start, copied under the lock."""
        with self._lock:
            return Observations(dict(self._views), self._dropped, self._listening_since, dict(self._links))

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until the subscriptions are active (retained messages then follow)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._listening_since is not None, timeout_s)

    def probe(self, timeout_s: float) -> tuple[str | None, float]:
        """Publish a probe and wait for it to come back: (error or None, seconds taken)."""
        started = time.monotonic()
        with self._lock:
            # Once connected, a lost connection is a failure now: paho reconnects in the
            # background, and waiting for it would make each cycle last the full timeout.
            waiting_s = 0.0 if self._was_connected else timeout_s
        if not self.wait_subscribed(waiting_s):
            with self._lock:
                problem = self._last_problem
            return f"cannot use the broker at {self._broker}: {problem}", time.monotonic() - started
        nonce = uuid.uuid4().hex
        self._client.publish(probe_topic(self._client_id), nonce, qos=1)
        remaining = max(timeout_s - (time.monotonic() - started), 0.0)
        with self._lock:
            back = self._lock.wait_for(lambda: nonce in self._echoes, remaining)
            self._echoes.discard(nonce)
        elapsed = time.monotonic() - started
        if back:
            with self._lock:
                # Retained messages arrive before our probe comes back. Mosquitto publishes
                # the dropped counter only once it changes and does not persist $SYS, so
                # after a broker restart no value means none dropped yet.
                if self._dropped is None:
                    self._dropped = 0
        if not back:
            return (
                f"the broker at {self._broker} accepted the connection but did not deliver the probe on "
                f"{probe_topic(self._client_id)} within {timeout_s:.0f} s", elapsed,
            )
        return None, elapsed

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            with self._lock:
                self._last_problem = f"connection refused: {reason_code}"
            logger.error("broker %s refused the watchdog's connection: %s", self._broker, reason_code)
            return
        logger.info("watchdog connected to broker %s", self._broker)
        topics = [(STATUS_FILTER, 1), (HEARTBEAT_FILTER, 0), (DROPPED_TOPIC, 0),
                  (SITE_BRIDGE_STATES, 1), (probe_topic(self._client_id), 1)]
        # Subscribing on every connect: a reconnect gets the retained messages again.
        _, mid = client.subscribe(topics)
        with self._lock:
            self._subscribe_mid = mid

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        with self._lock:
            if failed:
                self._last_problem = f"subscription refused: {failed[0]}"
                logger.error("broker %s refused the watchdog's subscriptions: %s", self._broker, failed)
                return
            if mid == self._subscribe_mid:
                self._listening_since = self._now()
                self._was_connected = True
                self._dropped = None  # this connection's retained value (if any) follows
                # Likewise the links' states: a restarted broker kept none, and a site whose
                # bridge has not connected since must not look up from what we saw before.
                self._links = {}
                self._lock.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self._listening_since = None
            self._last_problem = f"disconnected ({reason_code})"
        logger.warning("watchdog disconnected from broker %s: %s", self._broker, reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Never let an exception escape: paho would stop its network loop.
        try:
            self._record(str(message.topic), bytes(message.payload), retained=bool(message.retain))
        except Exception:
            logger.exception("could not record a message on %s", getattr(message, "topic", "?"))

    def _record(self, topic: str, payload: bytes, *, retained: bool) -> None:
        now = self._now()
        with self._lock:
            if (name := client_id_of(topic, STATUS_PREFIX)) is not None:
                status = WorkerStatus.parse(payload)
                self._views[name] = replace(self._views.get(name, WorkerView(name)), status=status)
            elif (name := client_id_of(topic, HEARTBEAT_PREFIX)) is not None:
                self._record_heartbeat(name, payload, retained=retained, now=now)
            elif topic == DROPPED_TOPIC:
                self._dropped = int(payload)
            elif (site := site_bridge_of(topic)) is not None:
                self._record_link(site, payload, now)
            else:
                self._echoes.add(payload.decode("ascii", "replace"))
                self._lock.notify_all()

    def _record_link(self, site: str, payload: bytes, now: datetime) -> None:
        if not payload:  # the retained state was cleared: as if the site had never reported
            self._links.pop(site, None)
            return
        state = LinkState.parse(payload)
        previous = self._links.get(site)
        if previous is not None and previous.payload == payload:
            return  # the same state again: it has held since we first saw it
        if state is not LinkState.UP:
            logger.warning("site bridge %s reports its link %s", site, "down" if state else f"as {payload!r}")
        self._links[site] = LinkView(state, payload, now)

    def _record_heartbeat(self, name: str, payload: bytes, *, retained: bool, now: datetime) -> None:
        try:
            beat, malformed = parse_heartbeat(payload), None
        except MalformedHeartbeat as exc:
            beat, malformed = None, str(exc)
            logger.warning("unreadable heartbeat from %s: %s", name, malformed)
        heard_at = _heard_at(beat, payload, retained, now)
        view = self._views.get(name, WorkerView(name))
        self._views[name] = replace(view, heartbeat=beat, heartbeat_at=heard_at, malformed=malformed)


def _heard_at(beat: Heartbeat | None, payload: bytes, retained: bool, now: datetime) -> datetime | None:
    """When a heartbeat counts as sent: a live one when it arrived, whatever the worker's clock says;
    a retained one when the worker says (an unreadable retained one: unknown, so not fresh)."""
    if retained:
        return min(beat.at, now) if beat else None
    return now if payload else None
