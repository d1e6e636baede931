"""Publish the planned messages at QoS 1 on schedule, and wait until the broker confirmed each."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from simulator.pacing import Clock, Pacer
from simulator.readings import Message, MessageFactory
from simulator.tracker import Tally, Tracker

logger = logging.getLogger(__name__)

QOS = 1
MQTT_ERR_SUCCESS = 0
MQTT_ERR_NO_CONN = 4  # paho keeps a QoS 1 message it could not send yet and sends it on reconnect


class MqttClient(Protocol):
    """The part of paho.mqtt.client.Client the publisher uses."""

    on_connect: Any
    on_disconnect: Any
    on_publish: Any

    def publish(self, topic: str, payload: bytes, qos: int = ...) -> Any: ...


@dataclass
class RunResult:
    """What was published: the counters, the messages and when each was first published."""

    tally: Tally
    elapsed_s: float
    messages: list[Message] = field(default_factory=list)
    published_at: dict[int, datetime] = field(default_factory=dict)


Progress = Callable[[int, int, int], None]  # (published, total, confirmed)


class Publisher:
    """Sends each message when the pacer says, keeping at most `window` unconfirmed.

    paho re-sends unconfirmed QoS 1 messages itself after a reconnect; the
    tracker counts those, retries messages the broker or client refused, and
    at the end reports every message never confirmed as failed.
    """

    def __init__(
        self,
        client: MqttClient,
        factory: MessageFactory,
        *,
        pacer: Pacer,
        clock: Clock,
        wall: Callable[[], datetime],
        window: int = 100,
        confirm_timeout_s: float = 60.0,
        progress: Progress | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self._client = client
        self._factory = factory
        self._pacer = pacer
        self._clock = clock
        self._wall = wall
        self._window = window
        self._confirm_timeout_s = confirm_timeout_s
        self._progress = progress or (lambda published, total, confirmed: None)
        self._tracker = tracker or Tracker()
        self._changed = threading.Condition()
        self._connects = 0
        self.connected = threading.Event()
        self.refused: str | None = None
        self._messages: list[Message] = []
        self._published_at: dict[int, datetime] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    def run(self) -> RunResult:
        """Publish every planned message, then wait up to confirm_timeout_s for the last PUBACKs."""
        total = len(self._factory)
        started = self._clock.monotonic()
        for index in range(total):
            self._pacer.wait_for(index)
            self._wait_until(lambda: self._tracker.outstanding < self._window, None)
            self._send_retries()
            message = self._factory.build(index, self._wall)
            self._messages.append(message)
            self._published_at[index] = self._wall()
            self._send(message, first_sent_at=None, attempts=1)
            self._progress(index + 1, total, self._tracker.tally.confirmed)
        self._finish()
        self._progress(total, total, self._tracker.tally.confirmed)
        elapsed = self._clock.monotonic() - started
        return RunResult(self._tracker.tally, elapsed, self._messages, self._published_at)

    def _finish(self) -> None:
        deadline = self._clock.monotonic() + self._confirm_timeout_s
        while True:
            self._send_retries()
            with self._changed:
                if not self._tracker.outstanding and not self._has_retries():
                    return
            if not self._wait_until(lambda: self._tracker.outstanding == 0 or self._has_retries(), deadline):
                with self._changed:
                    lost = self._tracker.give_up_outstanding()
                logger.error(
                    "%d messages were not confirmed by the broker within %.0f s", lost, self._confirm_timeout_s
                )
                return

    def _has_retries(self) -> bool:
        return self._tracker.retrying > 0

    def _wait_until(self, condition: Callable[[], bool], deadline: float | None) -> bool:
        with self._changed:
            while not condition():
                if deadline is not None and self._clock.monotonic() >= deadline:
                    return False
                self._changed.wait(0.1)
        return True

    def _send_retries(self) -> None:
        with self._changed:
            retries = self._tracker.take_retries()
        for index, first_sent_at, attempts in retries:
            logger.warning("publishing message %d again (attempt %d)", index, attempts + 1)
            self._send(self._messages[index], first_sent_at=first_sent_at, attempts=attempts + 1)

    def _send(self, message: Message, *, first_sent_at: float | None, attempts: int) -> None:
        # Not under our lock: paho calls on_publish while holding its own
        # mutex, so holding ours across publish() could deadlock. The tracker
        # copes with a PUBACK that arrives before sent() is recorded.
        at = self._clock.monotonic()  # before publish(): its PUBACK may be handled before it returns
        info = self._client.publish(message.topic, message.payload, qos=QOS)
        with self._changed:
            if info.rc in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):
                self._tracker.sent(info.mid, message.index, at_s=at, first_sent_at=first_sent_at, attempts=attempts)
            else:
                logger.warning("client refused message %d (rc %s); will retry", message.index, info.rc)
                self._tracker.refused_locally(message.index, at_s=at, first_sent_at=first_sent_at, attempts=attempts)
            self._changed.notify_all()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            logger.error("broker refused the connection: %s", reason_code)
            return
        with self._changed:
            self._connects += 1
            if self._connects > 1:
                self._tracker.reconnected()
                logger.warning("reconnected to the broker; %d unconfirmed messages are sent again",
                               self._tracker.outstanding)
            self._changed.notify_all()
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.warning("disconnected from the broker (%s); reconnecting", reason_code)
        else:
            logger.info("disconnected from the broker (%s)", reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        at = self._clock.monotonic()
        with self._changed:
            self._tracker.confirmed(mid, ok=not reason_code.is_failure, at_s=at)
            self._changed.notify_all()
