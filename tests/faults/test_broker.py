"""Faults in the broker: a graceful restart, a SIGKILL with publishers re-sending, what a SIGKILL keeps.

Mosquitto 2.0.11 (Debian 12, the broker these tests run) restores a durable
`$share` subscription only when its client subscribes again (fixed in
2.0.12): readings published after a restart and before the workers are back
find no subscriber and are dropped. The tests therefore let publishers in only
once the workers have resubscribed (docs/reliability.md, "Known limits").
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from fix_measure import Measure

from devstack import traffic
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient, heartbeats_of
from devstack.postgres import PostgresServer
from devstack.processes import REPO_ROOT, wait_until, wait_until_steady
from devstack.proxy import TcpProxy
from devstack.simulator_process import simulator_env
from devstack.workers import StartWorker, WorkerProcess
from iotcommon.contract import HEARTBEAT_FILTER, Heartbeat, heartbeat_topic


def _saved_since(broker: MosquittoServer, since: float) -> bool:
    """Whether the broker has written its persistence file since `since` (time.time())."""
    saved = broker.persistence_file
    return saved.exists() and saved.stat().st_mtime > since


def _resubscribed(workers: list[WorkerProcess], times: int) -> bool:
    return all(w.log_text().count("subscribed to") >= times for w in workers)


def test_broker_restarted_gracefully_mid_run_loses_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_mosquitto: MosquittoServer,
    measure: Measure,
) -> None:
    # A 1 s flush interval leaves readings unacknowledged in the workers when
    # the broker goes down; the broker persists them and sends them again.
    workers = [start(name, bridge_linger_ms=1000) for name in ("b1", "b2")]
    first, second = traffic.build(1500), traffic.build(1500, first=10_000)
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(first.messages)
    restartable_mosquitto.stop(signal.SIGTERM)
    stopped_at = time.monotonic()
    restartable_mosquitto.start()
    wait_until(lambda: _resubscribed(workers, 2), 30, message="workers resubscribed")
    back_s = time.monotonic() - stopped_at
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(second.messages)
    expected = first.expected | second.expected
    traffic.wait_for_counts(admin_database_url, len(expected))

    assert traffic.stored_rows(admin_database_url) == expected
    assert all(worker.is_running() for worker in workers)
    measure("SIGTERM → workers resubscribed", f"{back_s:.1f} s")


def test_broker_sigkilled_mid_run_publishers_that_resend_lose_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_mosquitto: MosquittoServer,
    tmp_path: Path, measure: Measure,
) -> None:
    workers = [start(name) for name in ("s1", "s2")]
    out = tmp_path / "summary.json"
    command = [sys.executable, "-m", "simulator", "--progress", "none", "--messages", "3000", "--duration", "10",
               "--invalid", "0.02", "--seed", "9", "--verify", "--verify-timeout", "60", "--json", str(out)]
    # The simulator reaches the broker through a proxy, so that it can be kept
    # out until the workers have resubscribed (the 2.0.11 limit above).
    with TcpProxy(restartable_mosquitto.port) as proxy, subprocess.Popen(
        command, cwd=REPO_ROOT, env=simulator_env(proxy.url_for(mqtt_url), admin_database_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as simulator:
        wait_until(lambda: traffic.counts(admin_database_url)[0] >= 600, 30, message="first readings stored")
        proxy.refuse()
        restartable_mosquitto.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        restartable_mosquitto.start()
        wait_until(lambda: _resubscribed(workers, 2), 30, message="workers resubscribed")
        proxy.admit()
        stdout, stderr = simulator.communicate(timeout=120)

    assert simulator.returncode == 0, stdout + stderr
    data = json.loads(out.read_text())
    assert data["publish"]["reconnects"] >= 1 and "reconnected to the broker" in stderr
    assert (data["publish"]["confirmed"], data["publish"]["failed"]) == (3000, 0)
    assert (data["verify"]["missing"], data["verify"]["unexpected"]) == (0, 0)
    assert data["verify"]["found"] == 2940 == traffic.counts(admin_database_url)[0]
    assert all(worker.is_running() for worker in workers)
    measure("published / confirmed / found / missing",
            f"3000 / {data['publish']['confirmed']} / {data['verify']['found']} / {data['verify']['missing']}")
    measure("SIGKILL → simulator verdict", f"{time.monotonic() - killed_at:.1f} s")


def test_broker_sigkilled_keeps_what_it_saved_and_loses_what_came_after(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_mosquitto: MosquittoServer,
    mqtt_client: MqttTestClient, measure: Measure,
) -> None:
    """What the broker itself keeps: readings queued for an absent worker, across a SIGKILL."""
    worker = start("keep")
    worker.terminate()  # its session, with its subscription, stays in the broker
    saved, unsaved = traffic.build(1000), traffic.build(1000, first=50_000)
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(saved.messages)
    published_at = time.time()
    # autosave_interval (10 s in mosquitto.conf) writes the queue to disk.
    wait_until(lambda: _saved_since(restartable_mosquitto, published_at), 25,
               message="an autosave after the first readings were queued")
    with MqttTestClient.from_url(mqtt_url) as client:
        client.publish_many(unsaved.messages)  # acknowledged to the publisher, not yet on disk
    restartable_mosquitto.stop(signal.SIGKILL)
    restartable_mosquitto.start()

    with MqttTestClient.from_url(mqtt_url) as beats:
        beats.subscribe(heartbeat_topic(worker.client_id))
        again = start("keep")
        wait_until(lambda: traffic.counts(admin_database_url)[0] >= len(saved.expected), 30,
                   message="the readings saved before the SIGKILL")
        stored = wait_until_steady(lambda: traffic.counts(admin_database_url)[0], 3, 30, message="the broker's queue")
        wait_until(lambda: any(b.in_flight == 0 for b in heartbeats_of(beats, {again.client_id})), 10,
                   message="the worker holding nothing more")

    rows = traffic.stored_rows(admin_database_url)
    assert saved.expected <= rows, "everything the broker had saved is delivered after the SIGKILL"
    assert rows <= saved.expected | unsaved.expected
    kept_after_save = len(rows & unsaved.expected)
    measure("queued before the last autosave / delivered", f"{len(saved.expected)} / {len(saved.expected)}")
    measure("queued after the last autosave / delivered",
            f"{len(unsaved.expected)} / {kept_after_save} (the rest lost with the SIGKILL)")
    assert stored == len(rows)


def test_broker_sigkilled_while_the_database_is_down_loses_nothing_the_workers_held(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_mosquitto: MosquittoServer,
    restartable_postgres: PostgresServer, measure: Measure,
) -> None:
    """Two faults at once: the database is down, so the workers hold readings unacknowledged; then
    the broker is SIGKILLed before its next autosave, so it comes back knowing nothing of them."""
    workers = [start(name, bridge_db_retry_max_s=1) for name in ("dd1", "dd2")]
    ids = {w.client_id for w in workers}
    restartable_postgres.stop("immediate")
    sent = traffic.build(500, invalid_share=0.02)
    with MqttTestClient.from_url(mqtt_url) as client:
        client.subscribe(HEARTBEAT_FILTER)
        # Right after an autosave, so that the readings are in no saved state when the broker dies.
        saved_before = time.time()
        wait_until(lambda: _saved_since(restartable_mosquitto, saved_before), 25, message="an autosave")
        client.publish_many(sent.messages)
        wait_until(lambda: sum(beat.received for beat in _latest(client, ids).values()) >= len(sent.messages), 10,
                   message="the workers holding every message")
    restartable_mosquitto.stop(signal.SIGKILL)
    restartable_mosquitto.start()
    wait_until(lambda: _resubscribed(workers, 2), 30, message="workers resubscribed")
    with MqttTestClient.from_url(mqtt_url) as client:
        client.subscribe(HEARTBEAT_FILTER)
        # Keep the database down until each worker has retried once more on the new connection.
        def every_worker_s_errors() -> dict[str, int] | None:
            errors = {name: beat.db_errors for name, beat in _latest(client, ids).items()}
            return errors if len(errors) == len(ids) else None

        before = wait_until(every_worker_s_errors, 10, message="heartbeats on the new connection")
        wait_until(lambda: all(_latest(client, ids)[w].db_errors > before[w] for w in ids), 30,
                   message="a retry on the new connection")
    restartable_postgres.start()

    traffic.assert_stored_exactly(admin_database_url, sent, timeout=60, redelivered=True)
    assert all(worker.is_running() for worker in workers)
    measure("held by the workers, unknown to the restarted broker / stored",
            f"{len(sent.messages)} / {len(sent.expected) + sent.invalid}")


def _latest(client: MqttTestClient, ids: set[str]) -> dict[str, Heartbeat]:
    """The last heartbeat of each of these workers."""
    return {beat.client_id: beat for beat in heartbeats_of(client, ids)}


def test_broker_down_fails_readiness_but_not_liveness(
    start: StartWorker, restartable_mosquitto: MosquittoServer,
) -> None:
    """Why deploy/k8s probes liveness with `health --live`: a broker outage must not restart every worker."""
    worker = start("probes", bridge_heartbeat_s=1)

    def health(*options: str) -> int:
        return worker.run("health", *options).returncode

    # The first beat may predate the CONNACK; a later one shows the worker connected.
    wait_until(lambda: health() == 0, 10, message="readiness passing once connected")
    assert health("--live") == 0
    restartable_mosquitto.stop(signal.SIGTERM)
    try:
        wait_until(lambda: health() == 1, 20, message="readiness failing while the broker is down")
        assert health("--live") == 0
    finally:
        restartable_mosquitto.start()
    wait_until(lambda: health() == 0, 40, message="readiness back once the worker reconnected")
    worker.kill()
    wait_until(lambda: health("--live") == 1, 20, message="liveness failing once the worker is dead")
