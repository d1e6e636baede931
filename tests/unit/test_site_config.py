"""mosquitto/site.conf: the settings docs/scaling.md ("Site brokers") promises; each guards a loss of issue 19."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotcommon.contract import READINGS_FILTER

ROOT = Path(__file__).resolve().parents[2]


def options(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(broker options, options of the bridge block): the lines after `connection` belong to the bridge."""
    broker: dict[str, str] = {}
    bridge: dict[str, str] = {}
    target = broker
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "connection":
            target = bridge
        target[key] = value
    return broker, bridge


@pytest.fixture(scope="module")
def site() -> tuple[dict[str, str], dict[str, str]]:
    return options(ROOT / "mosquitto" / "site.conf")


def test_the_queue_holds_far_more_than_mosquittos_default(site: tuple[dict[str, str], dict[str, str]]) -> None:
    broker, _ = site
    assert int(broker["max_queued_messages"]) >= 1_000_000  # the default 1000 dropped readings silently
    assert int(broker["max_queued_bytes"]) >= 200 * 1_000_000  # 1,000,000 readings of about 200 bytes
    assert int(broker["max_inflight_messages"]) >= 100  # 1 sends one reading per round trip


def test_the_queue_survives_a_restart_and_a_crash_loses_seconds(site: tuple[dict[str, str], dict[str, str]]) -> None:
    broker, bridge = site
    assert broker["persistence"] == "true"
    assert int(broker["autosave_interval"]) <= 10  # the default 1800 s lost a whole queue to a SIGKILL
    assert broker["autosave_on_changes"] == "false"  # each save rewrites the whole queue
    assert (bridge["cleansession"], bridge["local_cleansession"]) == ("false", "false")


def test_the_bridge_is_mqtt_311_with_a_stable_id_and_notifications(site: tuple[dict[str, str], dict[str, str]]) -> None:
    _, bridge = site
    assert bridge["bridge_protocol_version"] == "mqttv311"  # eclipse/mosquitto#2424, #2793, #2301
    assert bridge["remote_clientid"] and bridge["remote_username"] == "site-bridge"
    assert bridge["notifications"] == "true" and "notification_topic" not in bridge  # the watchdog's topic
    assert bridge["topic"] == f"{READINGS_FILTER} out 1", "the readings, and only they, at QoS 1"


def test_the_site_checks_its_devices_as_the_central_broker_does(site: tuple[dict[str, str], dict[str, str]]) -> None:
    broker, _ = site
    central, _ = options(ROOT / "mosquitto" / "mosquitto.conf")
    assert broker["allow_anonymous"] == "false"
    for key in ("plugin", "plugin_opt_config_file", "max_packet_size", "persistence_location"):
        assert broker[key] == central[key], key
