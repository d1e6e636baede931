"""Reference consumers for the benchmark, run as their own processes (one per core, like workers).

    python benchmarks/consumer.py count CLIENT_ID GROUP MQTT_URL COUNT_FILE
    python benchmarks/consumer.py naive CLIENT_ID GROUP MQTT_URL COUNT_FILE DATABASE_URL

`count` is the ceiling: a bare paho consumer in the shared subscription that
only counts and acks (paho acks in on_message). `naive` is the baseline a
simple service would write: one INSERT and one commit per message, then the
ack. Both keep a persistent session like the bridge, publish the retained
`online` on bridge/status/<client_id> after their SUBACK (so the benchmark
waits for them the same way as for workers), and write their running count
to COUNT_FILE. SIGTERM disconnects cleanly and keeps the session.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iotcommon.contract import WorkerStatus, shared_subscription, status_topic
from iotcommon.signals import on_stop_signal

INSERT = (
    'INSERT INTO readings (sensor_id, "timestamp", variable, value, unit) '
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


class Counter:
    """Counts messages; the main thread writes the count to a file every 50 ms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def add(self) -> None:
        """Count one message (on the paho thread: nothing else, to keep the ceiling honest)."""
        self.count += 1

    def flush(self) -> None:
        """Write the count now (atomically: rename over the old file)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.count))
        tmp.replace(self.path)


def main(argv: list[str]) -> int:
    """Consume until SIGTERM."""
    mode, client_id, group, url, count_file = argv[:5]
    counter = Counter(Path(count_file))
    naive = mode == "naive"
    conn = psycopg.connect(argv[5]) if naive else None
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=naive)

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(shared_subscription(group), qos=1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        c.publish(status_topic(client_id), WorkerStatus.ONLINE.value, qos=1, retain=True)

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        if conn is not None:
            body = json.loads(message.payload)
            items = body if isinstance(body, list) else [body]
            with conn.cursor() as cur:
                rows = [(r["sensor_id"], r["timestamp"], r["variable"], r["value"], r["unit"]) for r in items]
                cur.executemany(INSERT, rows)
            conn.commit()
            c.ack(message.mid, message.qos)
        counter.add()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    stop = threading.Event()
    on_stop_signal(lambda name: stop.set())
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = 2000  # the bridge's default BRIDGE_MAX_IN_FLIGHT
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password) if parts.password else None)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=False, properties=properties)
    client.loop_start()
    while not stop.wait(0.05):
        counter.flush()
    client.publish(status_topic(client_id), WorkerStatus.OFFLINE.value, qos=1, retain=True).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()
    counter.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
