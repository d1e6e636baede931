"""Faults in bridge workers: killed, killed for good, frozen, a bug in message handling.

Each scenario ends by checking the exact set of stored rows (values included),
not just a count. Figures go to the end-of-run table (see conftest.measure).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psycopg
from fix_measure import Measure
from fix_watchdog import StartWatchdog, alerts_about, kinds

from bridge.config import Settings
from bridge.mqtt.fastpath import READ_CHUNK
from devstack import traffic
from devstack.discord_stub import DiscordStub
from devstack.mqtt_client import BackgroundPublisher, MqttTestClient, heartbeats_of
from devstack.processes import REPO_ROOT, memory_kb, wait_until, wait_until_steady
from devstack.workers import StartWorker
from iotcommon.contract import heartbeat_topic, reading_topic


def test_worker_killed_mid_run_and_restarted_with_same_id_loses_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, measure: Measure,
) -> None:
    workers = {name: start(name) for name in ("k1", "k2", "k3")}
    sent = traffic.build(6000, duplicate_share=0.1)
    thread = BackgroundPublisher(mqtt_url, sent.messages, chunk=200)

    wait_until(lambda: traffic.counts(admin_database_url)[0] >= 1000, 60, message="1000 readings stored")
    workers["k2"].kill()
    thread.join()
    workers["k2"] = start("k2")
    restarted_at = time.monotonic()
    traffic.assert_stored_exactly(admin_database_url, sent)

    assert all(worker.is_running() for worker in workers.values())
    measure("messages / unique readings", f"{len(sent.messages)} / {len(sent.expected)}, all stored once")
    measure("restart → all stored", f"{time.monotonic() - restarted_at:.1f} s")


def _broker_queue_bounds() -> str:
    """The bound on what the broker keeps for an absent worker, read from the shipped settings."""
    config = (REPO_ROOT / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")

    def setting(name: str) -> int:
        found = re.search(rf"^{name}\s+(\d+)", config, re.MULTILINE)
        assert found, f"{name} missing from mosquitto/mosquitto.conf"
        return int(found.group(1))

    expiry_s = Settings.model_fields["session_expiry_s"].default
    return (
        f"session kept {expiry_s} s (BRIDGE_SESSION_EXPIRY_S), queue ≤ {setting('max_queued_messages'):,} "
        f"messages and ≤ {setting('max_queued_bytes') // 2**20} MiB (mosquitto.conf)"
    )


def test_killed_worker_left_down_is_alerted_and_its_readings_wait_in_the_broker(
    start: StartWorker, mqtt_url: str, admin_database_url: str,
    start_watchdog: StartWatchdog, discord: DiscordStub, measure: Measure,
) -> None:
    workers = [start(name) for name in ("d1", "d2", "d3")]
    dead = workers[2]
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS=",".join(w.client_id for w in workers))
    watchdog.wait_until_all_ok()

    dead.kill()
    killed_at = time.monotonic()
    sent = traffic.build(3000)
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(sent.messages)
    wait_until(lambda: alerts_about(discord, dead.client_id), 30, message="DOWN for the killed worker")
    detected_s = alerts_about(discord, dead.client_id)[0].at - killed_at

    # The share group keeps dealing readings to the absent member: they queue
    # in its session instead of going to the two live workers.
    stored_while_away = wait_until_steady(
        lambda: traffic.counts(admin_database_url)[0], 3, 60, message="the live workers' share stored"
    )
    held = len(sent.expected) - stored_while_away
    assert 0 < held < len(sent.expected), "the absent worker's share waits in the broker, the rest is stored"
    assert traffic.stored_rows(admin_database_url) < sent.expected

    start("d3")  # the same client id: the same session
    back_at = time.monotonic()
    traffic.assert_stored_exactly(admin_database_url, sent, timeout=60)
    drained_s = time.monotonic() - back_at
    wait_until(lambda: len(alerts_about(discord, dead.client_id)) == 2, 30, message="RECOVERED for the worker")

    assert kinds(alerts_about(discord, dead.client_id)) == ["DOWN", "RECOVERED"]
    assert all(worker.is_running() for worker in workers[:2])
    measure("watchdog DOWN after SIGKILL (1 s interval)", f"{detected_s:.1f} s")
    measure("readings held by the broker for the absent worker", f"{held} of {len(sent.expected)}")
    measure("worker back → its queue stored", f"{drained_s:.1f} s")
    measure("broker bound", _broker_queue_bounds())


def test_a_large_backlog_drains_with_the_worker_holding_no_more_than_its_limit(
    start: StartWorker, mqtt_url: str, admin_database_url: str, mqtt_client: MqttTestClient, measure: Measure,
) -> None:
    # Mosquitto before 2.0.13 sends past Receive Maximum once acks flow: draining
    # 20,000 queued messages, a plain client with Receive Maximum 300 held 5,101.
    limit, batch = 300, 100
    worker = start("bk", bridge_max_in_flight=limit, bridge_batch_size=batch)
    worker.terminate()  # away: everything published now queues in its session
    sent = traffic.build(20_000, duplicate_share=0.05, invalid_share=0.01)
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(sent.messages, timeout=120)
    mqtt_client.subscribe(heartbeat_topic(worker.client_id))

    again = start("bk", bridge_max_in_flight=limit, bridge_batch_size=batch)
    back_at = time.monotonic()
    traffic.assert_stored_exactly(admin_database_url, sent, timeout=120)
    drained_s = time.monotonic() - back_at
    # inbox_peak is the most the worker ever held waiting; wait for a beat sent after the drain.
    beat = wait_until(
        lambda: [b for b in heartbeats_of(mqtt_client, {again.client_id}) if b.stored >= len(sent.expected)],
        10, message="a heartbeat after the drain",
    )[-1]

    assert beat.inbox_peak <= limit, "the worker never held more than BRIDGE_MAX_IN_FLIGHT waiting"
    assert beat.inbox_peak >= batch, "the backlog really pressed on the limit"
    # ... nor more than one read of the socket on its way to the inbox (no read loop that never ends).
    smallest = min(len(topic) + len(payload) for topic, payload in sent.messages)
    assert 0 < beat.read_peak <= READ_CHUNK // smallest + 1
    peak_rss_mb = memory_kb(again.pid, "VmHWM") / 1024
    measure("backlog drained", f"{len(sent.messages)} messages in {drained_s:.1f} s "
            f"({len(sent.messages) / drained_s:,.0f} messages/s)")
    measure("most messages waiting in the worker", f"{beat.inbox_peak} (BRIDGE_MAX_IN_FLIGHT={limit}), "
            f"plus at most {beat.read_peak} from one read of the socket")
    measure("peak worker RSS (VmHWM)", f"{peak_rss_mb:.1f} MB")


def test_frozen_worker_is_alerted_and_loses_nothing_when_thawed(
    start: StartWorker, mqtt_url: str, admin_database_url: str,
    start_watchdog: StartWatchdog, discord: DiscordStub, measure: Measure,
) -> None:
    frozen, other = start("f1"), start("f2")
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS=f"{frozen.client_id},{other.client_id}")
    watchdog.wait_until_all_ok()
    sent = traffic.build(1000)

    frozen.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        publisher = BackgroundPublisher(mqtt_url, sent.messages, chunk=100)
        # No Last Will for a frozen process: only its silence gives it away.
        wait_until(lambda: alerts_about(discord, frozen.client_id), 30, message="DOWN for the frozen worker")
        publisher.join()
    finally:
        frozen.signal(signal.SIGCONT)
    thawed_at = time.monotonic()

    traffic.assert_stored_exactly(admin_database_url, sent)
    stored_s = time.monotonic() - thawed_at
    wait_until(lambda: len(alerts_about(discord, frozen.client_id)) == 2, 30, message="RECOVERED after SIGCONT")
    assert kinds(alerts_about(discord, frozen.client_id)) == ["DOWN", "RECOVERED"]
    assert frozen.is_running() and other.is_running()
    measure("watchdog DOWN after SIGSTOP (heartbeat timeout 4 s)",
            f"{alerts_about(discord, frozen.client_id)[0].at - frozen_at:.1f} s")
    measure("SIGCONT → all stored", f"{stored_s:.1f} s")


def test_exception_in_message_handling_is_rejected_and_the_rest_flow_on(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path,
) -> None:
    # A sitecustomize module, loaded by the worker's interpreter at start-up,
    # makes validation raise for payloads containing BOOM: a stand-in for a bug.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import bridge.validation as model\n"
        "_real = model.parse_message\n"
        "def parse_message(topic, payload, **kwargs):\n"
        "    if b'BOOM' in payload:\n"
        "        raise RuntimeError('injected fault')\n"
        "    return _real(topic, payload, **kwargs)\n"
        "model.parse_message = parse_message\n"
    )
    worker = start("x1", pythonpath=str(inject))
    good = traffic.build(500)
    bombs = [(reading_topic(n), b'{"BOOM": %d}' % n) for n in range(1, 11)]
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(good.messages[:250] + bombs + good.messages[250:])

    wait_until(lambda: traffic.counts(admin_database_url) == (500, 10), 30, message="500 stored, 10 rejected")
    assert traffic.stored_rows(admin_database_url) == good.expected
    with psycopg.connect(admin_database_url) as conn:
        rejected = conn.execute("SELECT payload, reason FROM rejected_messages").fetchall()
    assert sorted(bytes(payload) for payload, _ in rejected) == sorted(payload for _, payload in bombs)
    assert all("internal error while validating (RuntimeError: injected fault)" in reason for _, reason in rejected)
    assert worker.is_running()
    assert worker.log_text().count("bug while validating") == 10
