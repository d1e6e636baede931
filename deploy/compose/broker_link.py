"""broker-sync's MQTT connections (paho, MQTT v5): CONNECT tries, and dynamic-security requests as `admin`.

Part of the compose stack's init program (stack_init.py sync-broker); broker_sync.py
holds the logic and takes this as its Link.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

Event = tuple[str, Any]


class ConnectionLost(ConnectionError):
    """The broker closed our connection before it answered (it does when our own account changes)."""


class PahoControl:
    """One connection as `admin`, subscribed to the plugin's responses; request() sends one batch."""

    def __init__(self, client: mqtt.Client, events: queue.Queue[Event], *, timeout_s: float) -> None:
        self._client = client
        self._events = events
        self._timeout_s = timeout_s

    def request(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The plugin's answers to `batch`, in order; ConnectionLost, or TimeoutError without an answer."""
        # Other admins' answers come on the same topic: ours carry our correlation ids.
        tag = uuid.uuid4().hex
        commands = [{**command, "correlationData": f"{tag}-{i}"} for i, command in enumerate(batch)]
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        deadline = time.monotonic() + self._timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, value = self._events.get(timeout=left)
            except queue.Empty:
                break
            if kind == "disconnect":
                raise ConnectionLost
            if kind == "message":
                responses: list[dict[str, Any]] = json.loads(value).get("responses", [])
                if responses and str(responses[0].get("correlationData", "")).startswith(tag):
                    return responses
        raise TimeoutError(f"no answer from the broker's dynamic-security plugin within {self._timeout_s} s")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


class PahoLink:
    """The broker at host:port, reached with a fresh clean-start connection for each use."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 10.0) -> None:
        self._address = (host, port)
        self._timeout_s = timeout_s

    def accepts(self, username: str, password: str) -> bool:
        """Whether the broker accepts this account's password now (a CONNECT, then DISCONNECT)."""
        connected = self._connect(username, password)
        if connected is None:
            return False
        connected[0].disconnect()
        connected[0].loop_stop()
        return True

    def login(self, username: str, password: str) -> PahoControl | None:
        """A connection subscribed to the plugin's responses, or None if the broker refused the password."""
        connected = self._connect(username, password)
        if connected is None:
            return None
        client, events = connected
        client.subscribe(RESPONSE_TOPIC, qos=1)
        kind, reasons = self._next(events, "suback")
        if kind != "suback" or any(reason.is_failure for reason in reasons):
            client.disconnect()
            client.loop_stop()
            raise PermissionError(f"the broker refused {username}'s subscription to {RESPONSE_TOPIC}")
        return PahoControl(client, events, timeout_s=self._timeout_s)

    def _connect(self, username: str, password: str) -> tuple[mqtt.Client, queue.Queue[Event]] | None:
        """A connected client and its event queue, or None when the broker refused the credentials."""
        events: queue.Queue[Event] = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"broker-sync-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        client.username_pw_set(username, password)
        client.on_connect = lambda _c, _u, _f, reason, _p: events.put(("connack", reason))
        client.on_subscribe = lambda _c, _u, _m, reasons, _p: events.put(("suback", reasons))
        client.on_message = lambda _c, _u, message: events.put(("message", message.payload))
        client.on_disconnect = lambda _c, _u, _f, reason, _p: events.put(("disconnect", reason))
        client.connect(*self._address, keepalive=30, clean_start=True)  # OSError: unreachable
        client.loop_start()
        kind, reason = self._next(events, "connack")
        if kind == "connack" and not reason.is_failure:
            return client, events
        client.loop_stop()
        if kind != "connack":
            raise TimeoutError(f"no CONNACK from the broker at {self._address[0]}:{self._address[1]}")
        return None

    def _next(self, events: queue.Queue[Event], kind: str) -> Event:
        """The next event of `kind` (a disconnect ends the wait), or ("timeout", None)."""
        deadline = time.monotonic() + self._timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = events.get(timeout=left)
            except queue.Empty:
                break
            if event[0] in (kind, "disconnect"):
                return event
        return "timeout", None
