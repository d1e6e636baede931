"""A flood of wrong-password CONNECTs against a device account while readings flow at the seed load.

Device usernames are predictable (device-N), so anyone who reaches the broker
can send CONNECTs naming one. Mosquitto checks each password on its only
event loop: when the accounts were hashed at 210,000 PBKDF2 iterations, 150
wrong passwords stalled the broker for 19 s. Hashed as mosquitto/dynsec.py
hashes them now (docs/security.md), a flood of 600 (150 a second) costs it
nothing that shows: the exact set arrives, no reading is late, and the
device itself still gets in with its right password in the middle of it.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fix_measure import Measure

from devstack import traffic
from devstack.connects import NOT_AUTHORIZED, Login, Storm, connect_all
from devstack.mosquitto import MQTT_TEST_ACCOUNTS
from devstack.mqtt_client import MqttTestClient, PacedPublisher
from devstack.processes import wait_until
from devstack.soak import SoakRun, lateness, stored_at
from devstack.urls import with_login
from devstack.workers import StartWorker
from simulator.report import percentile

RATE = 83  # readings/s: the seed load
SECONDS = 8
WAVES, PER_WAVE = 4, 150  # each wave as many wrong passwords as stalled the broker for 19 s before
DEVICE = ("device-7", MQTT_TEST_ACCOUNTS["MQTT_DEVICES"].split(":", 1)[1])
# Bounds, with room for a busy 2-core CI machine; one wave at 210,000 iterations would cost ~20 s.
WAVE_ANSWERED_S = 3.0  # every CONNECT of a wave refused within (the kernel retries a SYN after 1 s)
P99_LATE_S = 0.5
MAX_LATE_S = 2.0


def _wait_published(publisher: PacedPublisher, count: int) -> None:
    wait_until(lambda: sum(at is not None for at in publisher.published_at) >= count, 10,
               message=f"{count} readings published")


def test_wrong_password_flood_against_a_device_account_stalls_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, measure: Measure,
) -> None:
    workers = [start(name) for name in ("flood-1", "flood-2")]
    sent = traffic.build(RATE * SECONDS)
    # One reading from the flooded device itself, sent with its right password mid-flood.
    topic, payload, row = traffic.reading(50 * len(sent.messages) + 6)  # sensor 7
    sent.expected.add(row)
    parts = urlsplit(mqtt_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    waves: list[Storm] = []
    publisher = PacedPublisher(mqtt_url, sent.messages, rate_per_s=RATE)
    try:
        for wave in range(WAVES):  # one wave a second, from the third second on
            _wait_published(publisher, (2 + wave) * RATE)
            logins = [Login(f"flood-{wave}-{n}", DEVICE[0], f"wrong-{n}") for n in range(PER_WAVE)]
            waves.append(connect_all(host, port, logins, timeout_s=60))
            if wave == WAVES // 2 - 1:
                device_started = time.monotonic()
                with MqttTestClient.from_url(with_login(mqtt_url, *DEVICE)) as device:
                    device.publish(topic, payload)
                device_s = time.monotonic() - device_started
    finally:
        publisher.join(timeout=60)  # also stops it if the broker stalled
    traffic.assert_stored_exactly(admin_database_url, sent, timeout=30)

    for storm in waves:
        assert len(storm.with_code(NOT_AUTHORIZED)) == PER_WAVE, [a for a in storm.answers if a.return_code][:3]
        assert storm.last_s(NOT_AUTHORIZED) < WAVE_ANSWERED_S
    late = sorted(entry.late_s for entry in lateness(SoakRun(sent, published_at=publisher.published_at),
                                                     stored_at(admin_database_url)))
    assert len(late) == len(sent.expected) - 1  # the device's own reading is not the publisher's
    p99 = percentile(late, 99) or 0.0
    assert p99 < P99_LATE_S and late[-1] < MAX_LATE_S, f"publish->commit p99 {p99:.3f} s, max {late[-1]:.3f} s"
    assert all(worker.is_running() for worker in workers)
    measure("wrong-password CONNECTs / refused", f"{WAVES * PER_WAVE} / "
            f"{sum(len(s.with_code(NOT_AUTHORIZED)) for s in waves)} (waves of {PER_WAVE}, one a second)")
    measure("slowest wave, all refused after", f"{max(s.last_s(NOT_AUTHORIZED) for s in waves):.2f} s")
    measure("the device's own CONNECT + PUBACK mid-flood", f"{device_s:.3f} s")
    measure("publish->commit during the flood", f"{len(late)} readings, p50 {percentile(late, 50):.3f} s, "
                                                f"p99 {p99:.3f} s, max {late[-1]:.3f} s")
