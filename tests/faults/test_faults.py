"""Faults injected into real processes; each ends by checking the exact set of stored rows.

Scenarios of issue 6 not already covered by tests/integration/test_bridge.py
(worker SIGKILL + restart, PostgreSQL stopped, broker restarted) and
tests/integration/test_simulator.py (the publisher's connection cut).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import traffic
from discord_stub import DiscordStub
from integration.test_watchdog import StartWatchdog, alerts_about, kinds
from mqtt_client import BackgroundPublisher, MqttTestClient, heartbeats_of
from processes import REPO_ROOT, wait_until
from workers import StartWorker


def assert_exactly(admin_url: str, sent: traffic.Traffic, *, timeout: float = 90) -> None:
    """Every unique valid reading stored once with its value, every invalid one rejected, nothing else."""
    wait_until(
        lambda: traffic.counts(admin_url) >= (len(sent.expected), sent.invalid), timeout, interval=0.2,
        message=f"{len(sent.expected)} readings and {sent.invalid} rejections stored",
    )
    assert traffic.stored_rows(admin_url) == sent.expected
    assert traffic.counts(admin_url) == (len(sent.expected), sent.invalid)


def test_bridge_connections_terminated_again_and_again_lose_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str
) -> None:
    workers = [start(name, bridge_db_retry_max_s=0.5) for name in ("t1", "t2")]
    sent = traffic.build(4000, duplicate_share=0.1, invalid_share=0.02)
    publisher = BackgroundPublisher(mqtt_url, sent.messages, chunk=100)
    terminated = 0
    with psycopg.connect(admin_database_url, autocommit=True) as admin:
        # Kill the workers' sessions every 0.2 s while readings flow (bounded: at most 60 rounds).
        for _ in range(60):
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(%s)",
                ([w.client_id for w in workers],),
            ).fetchall()
            terminated += sum(1 for (done,) in rows if done)
            if not publisher.is_alive() and terminated >= 10:
                break
            threading.Event().wait(0.2)  # the fault's rhythm, not a synchronisation
    publisher.join()

    assert terminated >= 10, "the fault really happened"
    assert_exactly(admin_database_url, sent)
    assert all(worker.is_running() for worker in workers)


def test_readings_locked_for_20_s_time_out_are_retried_and_lose_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str,
    mqtt_client: MqttTestClient,
) -> None:
    workers = [start(name, bridge_statement_timeout_ms=2000, bridge_db_retry_max_s=1) for name in ("l1", "l2")]
    mqtt_client.subscribe("bridge/heartbeat/+")
    sent = traffic.build(1500)
    with psycopg.connect(admin_database_url) as locker:
        locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        publisher = BackgroundPublisher(mqtt_url, sent.messages, chunk=100)
        # While the lock holds, batches time out (statement_timeout) and workers say so.
        wait_until(
            lambda: any(not b["db_ok"] for b in heartbeats_of(mqtt_client, {w.client_id for w in workers})),
            15, message="a heartbeat reporting the database unavailable",
        )
        wait_until(lambda: time.monotonic() - locked_at >= 20 or not all(w.is_running() for w in workers), 25,
                   message="20 s of lock")
        # (Counting rows here would itself wait for the lock: ask the workers instead.)
        ours = heartbeats_of(mqtt_client, {w.client_id for w in workers})
        assert ours and all(b["stored"] == 0 for b in ours), "nothing committed through the lock"
        assert any(int(b["db_errors"]) >= 2 for b in ours), "statements timed out and were retried"  # type: ignore[call-overload]
        assert all(worker.is_running() for worker in workers)
        locker.rollback()  # releases the lock
    publisher.join()

    assert_exactly(admin_database_url, sent)


def test_frozen_worker_is_alerted_and_loses_nothing_when_thawed(
    start: StartWorker, mqtt_url: str, admin_database_url: str,
    start_watchdog: StartWatchdog, discord: DiscordStub,
) -> None:
    frozen, other = start("f1"), start("f2")
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS=f"{frozen.client_id},{other.client_id}")
    watchdog.wait_until_all_ok()
    sent = traffic.build(1000)

    frozen.signal(signal.SIGSTOP)
    try:
        publisher = BackgroundPublisher(mqtt_url, sent.messages, chunk=100)
        # No Last Will for a frozen process: only its silence gives it away.
        wait_until(lambda: alerts_about(discord, frozen.client_id), 30, message="DOWN for the frozen worker")
        publisher.join()
    finally:
        frozen.signal(signal.SIGCONT)

    assert_exactly(admin_database_url, sent)
    wait_until(lambda: len(alerts_about(discord, frozen.client_id)) == 2, 30, message="RECOVERED after SIGCONT")
    assert kinds(alerts_about(discord, frozen.client_id)) == ["DOWN", "RECOVERED"]
    assert frozen.is_running() and other.is_running()


def test_exception_in_message_handling_is_rejected_and_the_rest_flow_on(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path,
) -> None:
    # A sitecustomize module, loaded by the worker's interpreter at start-up,
    # makes validation raise for payloads containing BOOM: a stand-in for a bug.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import bridge.model as model\n"
        "_real = model.parse_message\n"
        "def parse_message(topic, payload, **kwargs):\n"
        "    if b'BOOM' in payload:\n"
        "        raise RuntimeError('injected fault')\n"
        "    return _real(topic, payload, **kwargs)\n"
        "model.parse_message = parse_message\n"
    )
    worker = start("x1", pythonpath=str(inject))
    good = traffic.build(500)
    bombs = [(f"sensors/{n}/readings", b'{"BOOM": %d}' % n) for n in range(1, 11)]
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
