"""The watchdog against real Mosquitto, PostgreSQL, bridge workers and a local stand-in for Discord."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fix_site import SiteLink
from fix_watchdog import StartWatchdog, alerts_about, kinds

from devstack import traffic
from devstack.discord_stub import DiscordStub
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import PostgresServer
from devstack.processes import REPO_ROOT, wait_until
from devstack.workers import WorkerProcess
from iotcommon.contract import READINGS_FILTER, heartbeat_topic


def test_broker_stopped_gives_one_down_then_one_recovered(
    start_watchdog: StartWatchdog, discord: DiscordStub, restartable_mosquitto: MosquittoServer
) -> None:
    watchdog = start_watchdog()
    watchdog.wait_until_all_ok()

    restartable_mosquitto.stop(signal.SIGTERM)
    stopped_at = time.monotonic()
    wait_until(lambda: alerts_about(discord, "broker"), 30, message="a DOWN alert for the broker")
    detection_s = discord.accepted()[0].at - stopped_at
    restartable_mosquitto.start()
    wait_until(lambda: len(alerts_about(discord, "broker")) == 2, 30, message="a RECOVERED alert for the broker")
    cycles = watchdog.health()["cycles"]
    watchdog.wait_for_cycles(cycles + 3, 30)

    print(f"broker detection with a 1 s interval: {detection_s:.1f} s")
    assert [post.content for post in discord.accepted()] == [post.content for post in alerts_about(discord, "broker")]
    assert kinds(discord.accepted()) == ["DOWN", "RECOVERED"]
    assert "down —" in discord.accepted()[1].content and "after" in discord.accepted()[1].content
    assert discord.accepted()[0].body["allowed_mentions"] == {"parse": [], "roles": []}
    assert watchdog.is_running()


def test_site_bridge_link_down_gives_one_down_then_one_recovered(
    start_watchdog: StartWatchdog, discord: DiscordStub, site_link: SiteLink
) -> None:
    component = f"site-bridge:{site_link.name}"
    watchdog = start_watchdog(WATCHDOG_SITE_BRIDGES=site_link.name)
    watchdog.wait_until_all_ok()

    site_link.take_down()
    cut_at = time.monotonic()
    wait_until(lambda: alerts_about(discord, component), 30, message=f"a DOWN alert for {component}")
    detection_s = discord.accepted()[0].at - cut_at
    site_link.bring_up()
    wait_until(lambda: len(alerts_about(discord, component)) == 2, 30, message=f"a RECOVERED alert for {component}")
    watchdog.wait_for_cycles(watchdog.health()["cycles"] + 3, 30)

    print(f"site link detection with a 1 s interval: {detection_s:.1f} s")
    assert kinds(discord.accepted()) == ["DOWN", "RECOVERED"]
    assert all(f"`{component}`" in post.content for post in discord.accepted())
    assert "bridge state 0" in discord.accepted()[0].content


def test_database_stopped_gives_one_down_then_one_recovered(
    start_watchdog: StartWatchdog, discord: DiscordStub, restartable_postgres: PostgresServer
) -> None:
    watchdog = start_watchdog()
    watchdog.wait_until_all_ok()

    restartable_postgres.stop("fast")
    wait_until(lambda: alerts_about(discord, "database"), 30, message="a DOWN alert for the database")
    assert "SELECT 1" in discord.accepted()[0].content
    restartable_postgres.start()
    wait_until(lambda: len(alerts_about(discord, "database")) == 2, 30, message="a RECOVERED alert for the database")
    watchdog.wait_for_cycles(watchdog.health()["cycles"] + 3, 30)

    assert kinds(discord.accepted()) == ["DOWN", "RECOVERED"]
    assert all("`database`" in post.content for post in discord.accepted())
    assert watchdog.is_running()


def test_sigkilled_worker_is_named_down_and_recovers_on_restart(
    start: Callable[..., WorkerProcess], start_watchdog: StartWatchdog, discord: DiscordStub
) -> None:
    worker = start("wk")
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS=worker.client_id, WATCHDOG_MIN_WORKERS="1")
    watchdog.wait_until_all_ok()

    worker.kill()
    killed_at = time.monotonic()
    wait_until(lambda: alerts_about(discord, worker.client_id), 30, message=f"a DOWN alert for {worker.client_id}")
    detection_s = alerts_about(discord, worker.client_id)[0].at - killed_at
    again = start("wk")
    wait_until(lambda: len(alerts_about(discord, again.client_id)) == 2, 30, message="RECOVERED for the worker")
    wait_until(lambda: len(alerts_about(discord, "workers")) == 2, 30, message="RECOVERED for the worker count")

    print(f"SIGKILLed worker detection with a 1 s interval: {detection_s:.1f} s")
    assert kinds(alerts_about(discord, worker.client_id)) == ["DOWN", "RECOVERED"]
    assert "crashed (Last Will" in alerts_about(discord, worker.client_id)[0].content
    assert kinds(alerts_about(discord, "workers")) == ["DOWN", "RECOVERED"]
    assert len(discord.accepted()) == 4


def test_a_worker_stopped_cleanly_is_told_apart_from_a_crash(
    start: Callable[..., WorkerProcess], start_watchdog: StartWatchdog, discord: DiscordStub
) -> None:
    worker = start("ws")
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS=worker.client_id)
    watchdog.wait_until_all_ok()

    assert worker.terminate(10) == 0
    wait_until(lambda: alerts_about(discord, worker.client_id), 30, message=f"a DOWN alert for {worker.client_id}")

    content = alerts_about(discord, worker.client_id)[0].content
    assert "stopped cleanly" in content and "crashed" not in content


def test_healthy_stack_under_load_sends_no_alert_for_30_s(
    start: Callable[..., WorkerProcess], start_watchdog: StartWatchdog, discord: DiscordStub,
    mqtt_url: str, admin_database_url: str,
) -> None:
    workers = [start(f"ld{n}") for n in (1, 2)]
    watchdog = start_watchdog(
        WATCHDOG_BRIDGE_WORKERS=",".join(w.client_id for w in workers), WATCHDOG_MIN_WORKERS="2"
    )
    watchdog.wait_until_all_ok()
    first_cycle = watchdog.health()["cycles"]

    # Bounded load: at most 30 s and 60,000 readings, in PUBACKed chunks of 500.
    sent = traffic.build(60_000)
    deadline, published = time.monotonic() + 30, 0
    with MqttTestClient.from_url(mqtt_url) as publisher:
        while time.monotonic() < deadline and published < len(sent.messages):
            published += publisher.publish_many(sent.messages[published : published + 500])
    # At least 30 one-second cycles of watching, however soon the publisher finished.
    health = watchdog.wait_for_cycles(first_cycle + 30, 60)

    assert published >= 5000, "the publisher kept the stack busy"
    assert discord.posts() == [], [post.content for post in discord.posts()]
    assert health["down"] == []
    assert all(w.is_running() for w in workers)
    wait_until(lambda: traffic.counts(admin_database_url)[0] == published, 60, message="all readings stored")


def test_rate_limit_and_server_errors_are_retried_and_404_stops_posting(
    start_watchdog: StartWatchdog, discord: DiscordStub
) -> None:
    # A listed worker that does not exist: DOWN after the threshold, no server has to stop.
    discord.rate_limit(0.3)
    discord.answer(500)
    watchdog = start_watchdog(WATCHDOG_BRIDGE_WORKERS="ghost-" + uuid.uuid4().hex[:6], WATCHDOG_HEARTBEAT_TIMEOUT_S="1")
    wait_until(discord.accepted, 30, message="the DOWN alert delivered after a 429 and a 500")

    assert [post.status for post in discord.posts()] == [429, 500, 204]
    assert len({post.content for post in discord.posts()}) == 1, "the same alert, retried"
    assert "ghost-" in discord.accepted()[0].content and "never seen" in discord.accepted()[0].content
    log = watchdog.log_text()
    assert "rate limited (HTTP 429); retrying in 0.3 s" in log
    assert "HTTP 500 from Discord; retrying" in log

    discord.answer(404, {"message": "Unknown Webhook", "code": 10015}, times=5)
    second = start_watchdog(WATCHDOG_BRIDGE_WORKERS="ghost2-" + uuid.uuid4().hex[:6], WATCHDOG_HEARTBEAT_TIMEOUT_S="1")
    wait_until(lambda: "answered HTTP 404" in second.log_text(), 30, message="the 404 logged")
    second.wait_for_cycles(second.health()["cycles"] + 2, 15)
    assert second.is_running(), "the watchdog keeps checking without Discord"
    assert "ALERT 🔴 DOWN: `ghost2-" in second.log_text(), "the alert went to the log instead"
    assert [post.status for post in discord.posts()][3:] == [404]


def test_once_prints_a_table_and_exits_1_when_something_is_down(
    start: Callable[..., WorkerProcess], start_watchdog: StartWatchdog, mqtt_client: MqttTestClient
) -> None:
    worker = start("once")
    # The worker's first heartbeat goes out before it is connected; wait for a retained one.
    mqtt_client.subscribe(heartbeat_topic(worker.client_id))
    mqtt_client.wait_for_messages(1, timeout=10)
    healthy = start_watchdog(run=False, WATCHDOG_BRIDGE_WORKERS=worker.client_id).run("--once")
    missing = start_watchdog(run=False, WATCHDOG_BRIDGE_WORKERS=f"{worker.client_id},nobody-{uuid.uuid4().hex[:6]}")
    unhealthy = missing.run("--once")

    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    assert lines[0].split() == ["COMPONENT", "STATUS", "DETAIL"]
    table = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert table == {"broker": "OK", "database": "OK", worker.client_id: "OK", "broker-data-loss": "OK"}
    assert unhealthy.returncode == 1
    assert "nobody-" in unhealthy.stdout and "DOWN" in unhealthy.stdout


def test_health_command_and_clean_sigterm(start_watchdog: StartWatchdog, tmp_path: Path) -> None:
    watchdog = start_watchdog(DISCORD_WEBHOOK_URL="")
    watchdog.wait_for_cycles(1, 30)
    health = watchdog.run("health")
    nowhere = start_watchdog(run=False, WATCHDOG_HEALTH_FILE=str(tmp_path / "missing.health")).run("health")

    assert health.returncode == 0, health.stdout + health.stderr
    assert health.stdout.startswith("healthy")
    assert nowhere.returncode == 1
    assert "no usable health file" in nowhere.stdout
    assert watchdog.terminate() == 0
    log = watchdog.log_text()
    assert "alerts go to this log only" in log
    assert "received SIGTERM" in log
    assert "stopped: cycles=" in log


def test_broker_dropping_messages_is_an_alert_of_its_own(
    start_watchdog: StartWatchdog, discord: DiscordStub, tmp_path: Path
) -> None:
    # A broker like ours but with a 5-message queue and $SYS every second, so drops come quickly.
    config = (REPO_ROOT / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    config = config.replace("max_queued_messages 1000000", "max_queued_messages 5") + "\nsys_interval 1\n"
    template = tmp_path / "small-queue.conf"
    template.write_text(config, encoding="utf-8")
    broker = MosquittoServer(template)
    broker.start()
    try:
        with MqttTestClient.from_url(broker.url, client_id="sleeper", clean_start=False, session_expiry_s=600) as c:
            c.subscribe(READINGS_FILTER)
        watchdog = start_watchdog(MQTT_URL=broker.url)
        watchdog.wait_until_all_ok()
        with MqttTestClient.from_url(broker.url) as publisher:
            publisher.publish_many(traffic.build(50).messages)
        wait_until(lambda: alerts_about(discord, "broker-data-loss"), 30, message="a data-loss alert")
    finally:
        broker.cleanup()

    content = alerts_about(discord, "broker-data-loss")[0].content
    assert "DOWN" in content and "dropped 45 messages" in content
