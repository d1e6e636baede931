"""The project's broker configuration refuses what each account must not do (dynamic security)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from devstack import traffic
from devstack.mosquitto import MOSQUITTO_HINT, MQTT_TEST_ACCOUNTS, MosquittoServer
from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.processes import REPO_ROOT, wait_until
from devstack.workers import StartWorker, WorkerProcess

DEVICE = ("device-7", MQTT_TEST_ACCOUNTS["MQTT_DEVICES"].split(":", 1)[1])
BRIDGE = ("bridge", MQTT_TEST_ACCOUNTS["MQTT_BRIDGE_PASSWORD"])
WATCHDOG = ("watchdog", MQTT_TEST_ACCOUNTS["MQTT_WATCHDOG_PASSWORD"])


@pytest.fixture
def broker(mosquitto_server: MosquittoServer | None) -> MosquittoServer:
    if mosquitto_server is None:
        pytest.skip("needs the project's own broker config, started from local binaries")
    return mosquitto_server


def connect(broker: MosquittoServer, username: str | None, password: str | None) -> MqttTestClient:
    url = broker.url_as(username, password or "") if username else f"mqtt://{broker.host}:{broker.port}"
    return MqttTestClient.from_url(url).connect(timeout=5)


@pytest.mark.parametrize(
    "username, password", [(None, None), ("bridge", "wrong"), ("nobody", BRIDGE[1]), ("device-7", "")]
)
def test_anonymous_and_wrong_credentials_are_refused(broker: MosquittoServer, username: str | None,
                                                     password: str | None) -> None:
    with pytest.raises(MqttTestError, match="refused"):
        connect(broker, username, password)


@pytest.mark.parametrize(
    "account, topic",
    [
        (DEVICE, "$share/bridge/sensors/+/readings"),
        (DEVICE, "sensors/+/readings"),
        (DEVICE, "sensors/8/readings"),
        (DEVICE, "bridge/#"),
        (BRIDGE, "sensors/+/readings"),  # only through its share group
        (BRIDGE, "$SYS/#"),
    ],
)
def test_subscriptions_outside_a_role_are_refused(broker: MosquittoServer, account: tuple[str, str],
                                                  topic: str) -> None:
    client = connect(broker, *account)
    try:
        with pytest.raises(MqttTestError, match="refused"):
            client.subscribe(topic)
    finally:
        client.close()


@pytest.mark.parametrize(
    "account, topic",
    [(BRIDGE, "$share/bridge/sensors/+/readings"), (WATCHDOG, "$SYS/#"), (WATCHDOG, "bridge/#")],
)
def test_roles_may_subscribe_to_what_they_need(broker: MosquittoServer, account: tuple[str, str], topic: str) -> None:
    client = connect(broker, *account)
    try:
        client.subscribe(topic)
    finally:
        client.close()


@pytest.fixture
def bridge_worker(start_worker: StartWorker, broker: MosquittoServer, share_group: str) -> Iterator[WorkerProcess]:
    """A worker with the real `bridge` account; its role allows only the share group `bridge`."""
    client_id = f"secure-{share_group}"
    yield start_worker(client_id, mqtt_url=broker.url_as(*BRIDGE), bridge_share_group="bridge")
    # Its session would keep receiving the group's readings after the test: end it.
    MqttTestClient.from_url(broker.url, client_id=client_id, clean_start=True).connect().close()


def test_a_device_publishes_only_to_its_own_topic(
    broker: MosquittoServer, bridge_worker: WorkerProcess, admin_database_url: str
) -> None:
    _, own, own_row = traffic.reading(6, sensors=7)  # sensor 7
    _, foreign, _ = traffic.reading(7, sensors=8)  # sensor 8: would be stored if delivered
    device = connect(broker, *DEVICE)
    try:
        device.publish("sensors/8/readings", foreign)  # the broker acks and drops it
        device.publish("sensors/7/readings", own)
    finally:
        device.close()
    wait_until(lambda: traffic.counts(admin_database_url)[0] >= 1, 20, message="the device's own reading stored")
    assert traffic.stored_rows(admin_database_url) == {own_row}
    assert traffic.counts(admin_database_url) == (1, 0)


# --- the compose stack's broker health check, run with the local mosquitto_sub -----------------

HEALTH = ("health", MQTT_TEST_ACCOUNTS["MQTT_HEALTH_PASSWORD"])


def compose_health_check(options_folder: Path) -> str:
    """docker-compose.yml's broker health check as the shell would see it, its options in `options_folder`."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("$$", "$")  # Compose's escape for a literal $
    return re.sub(r"^XDG_CONFIG_HOME=\S+ ", f"XDG_CONFIG_HOME={options_folder} ", command)


def run_health_check(
    stack_init: ModuleType, broker: MosquittoServer, tmp_path: Path, password: str
) -> subprocess.CompletedProcess[str]:
    """The health check with the options file init writes, plus the test broker's port (the container's is 1883)."""
    folder = tmp_path / "health"
    folder.mkdir(exist_ok=True)
    (folder / "mosquitto_sub").write_text(stack_init.health_client_options(password) + f"-p {broker.port}\n")
    home = tmp_path / "home"  # no ~/.config/mosquitto_sub of the machine's user may help
    home.mkdir(exist_ok=True)
    return subprocess.run(
        ["sh", "-c", compose_health_check(folder)], env={"PATH": os.environ["PATH"], "HOME": str(home)},
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_the_compose_health_check_logs_in_from_its_options_file(
    stack_init: ModuleType, broker: MosquittoServer, tmp_path: Path
) -> None:
    if shutil.which("mosquitto_sub") is None:
        pytest.fail(f"mosquitto_sub not found: {MOSQUITTO_HINT}")

    healthy = run_health_check(stack_init, broker, tmp_path, HEALTH[1])
    wrong = run_health_check(stack_init, broker, tmp_path, HEALTH[1] + "-wrong")

    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert wrong.returncode != 0, "a refused login must make the broker unhealthy"
    assert HEALTH[1] not in compose_health_check(tmp_path)


def test_the_health_account_may_read_nothing_but_the_uptime(broker: MosquittoServer) -> None:
    client = connect(broker, *HEALTH)
    try:
        client.subscribe("$SYS/broker/uptime")
        for topic in ("$SYS/#", "bridge/#", "sensors/+/readings"):
            with pytest.raises(MqttTestError, match="refused"):
                client.subscribe(topic)
    finally:
        client.close()
