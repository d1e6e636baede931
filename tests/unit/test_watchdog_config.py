"""Watchdog settings: defaults, one variable per field, errors naming the variable, secrets kept secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import certifi
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr
from readme_tables import readme_settings_table

from iotcommon.errors import ConfigError
from watchdog.config import Settings, env_name

TOKEN = "s3cr3t-webhook-token-abcdef"
WEBHOOK = f"https://discord.com/api/webhooks/1234/{TOKEN}"


def config_error(**environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


def test_defaults_detect_within_30_s() -> None:
    settings = Settings.from_env({})

    assert settings.interval_s == 10
    assert settings.failure_threshold == 2
    assert settings.remind_s == 1800
    assert settings.expected_workers == ()
    assert settings.min_workers == 1
    assert settings.heartbeat_timeout_s == 15  # 3 x the bridge's 5 s heartbeat
    assert settings.discord_webhook_url is None
    assert settings.mention_role_ids == ()
    assert settings.health_path == "/tmp/iot-watchdog-watchdog-1.health"
    # A probe failure is alerted on the threshold-th cycle, each at most a probe timeout late.
    worst_probe_s = settings.failure_threshold * settings.interval_s + settings.broker_timeout_s
    assert worst_probe_s <= 30


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("WATCHDOG_INTERVAL_S", "2", "interval_s", 2.0),
        ("WATCHDOG_FAILURE_THRESHOLD", "3", "failure_threshold", 3),
        ("WATCHDOG_REMIND_S", "0", "remind_s", 0.0),
        ("WATCHDOG_BRIDGE_WORKERS", " bridge-1, bridge-2 ,", "expected_workers", ("bridge-1", "bridge-2")),
        ("WATCHDOG_SITE_BRIDGES", "site-1, plant.berlin", "expected_site_bridges", ("site-1", "plant.berlin")),
        ("WATCHDOG_MIN_WORKERS", "0", "min_workers", 0),
        ("WATCHDOG_HEARTBEAT_TIMEOUT_S", "30", "heartbeat_timeout_s", 30.0),
        ("WATCHDOG_STALL_S", "120", "stall_s", 120.0),
        ("WATCHDOG_BROKER_TIMEOUT_S", "1.5", "broker_timeout_s", 1.5),
        ("WATCHDOG_DATABASE_TIMEOUT_S", "3", "database_timeout_s", 3.0),
        ("WATCHDOG_DISCORD_TIMEOUT_S", "4", "discord_timeout_s", 4.0),
        ("WATCHDOG_DATA_LOSS_CLEAR_S", "30", "data_loss_clear_s", 30.0),
        ("WATCHDOG_STANDBYS", "2", "standbys", 2),
        ("WATCHDOG_REPLAY_LAG_S", "5", "replay_lag_s", 5.0),
        ("WATCHDOG_FAILOVER_CLEAR_S", "60", "failover_clear_s", 60.0),
        ("WATCHDOG_MENTION_ROLES", "123,456", "mention_role_ids", ("123", "456")),
        ("WATCHDOG_CLIENT_ID", "wd-2", "client_id", "wd-2"),
        ("WATCHDOG_HEALTH_FILE", "/run/wd.health", "health_path", "/run/wd.health"),
        ("WATCHDOG_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
    ],
)
def test_each_variable_is_read(variable: str, raw: str, field: str, expected: Any) -> None:
    assert getattr(Settings.from_env({variable: raw}), field) == expected


def test_env_names_match_field_names() -> None:
    assert env_name("interval_s") == "WATCHDOG_INTERVAL_S"
    assert env_name("mqtt_url") == "MQTT_URL"
    assert env_name("mqtt_ca_file") == "MQTT_CA_FILE"
    assert env_name("database_url") == "DATABASE_URL"
    assert env_name("discord_webhook_url_file") == "DISCORD_WEBHOOK_URL_FILE"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("WATCHDOG_INTERVAL_S", "0"),
        ("WATCHDOG_INTERVAL_S", "often"),
        ("WATCHDOG_FAILURE_THRESHOLD", "0"),
        ("WATCHDOG_MIN_WORKERS", "-1"),
        ("WATCHDOG_HEARTBEAT_TIMEOUT_S", "0"),
        ("WATCHDOG_BRIDGE_WORKERS", "bridge-1,bad id"),
        ("WATCHDOG_SITE_BRIDGES", "site-1,site/2"),
        ("WATCHDOG_MENTION_ROLES", "@everyone"),
        ("WATCHDOG_CLIENT_ID", "has space"),
        ("WATCHDOG_LOG_LEVEL", "LOUD"),
        ("MQTT_URL", "http://broker"),
        ("DATABASE_URL", "host='unclosed"),
        ("DATABASE_READ_URL", "host='unclosed"),
        ("DATABASE_READ_URL", "postgresql://watchdog:change-me@replica/sensors"),
        ("WATCHDOG_STANDBYS", "-1"),
        ("WATCHDOG_REPLAY_LAG_S", "0"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, raw: str) -> None:
    assert config_error(**{variable: raw}).variable == variable


def test_replication_is_not_watched_by_default_and_reads_go_to_the_primary() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://watchdog@db1/sensors"})

    assert settings.standbys == 0
    assert not settings.has_reader and settings.read_conninfo() == settings.conninfo()
    again = Settings.from_env({"DATABASE_URL": "postgresql://w@db1/s", "DATABASE_READ_URL": "postgresql://w@db1/s"})
    assert not again.has_reader, "the same URL twice is no reader of its own"


def test_the_reader_takes_the_database_password_unless_its_url_carries_one() -> None:
    environ = {"DATABASE_URL": "postgresql://watchdog@db1/sensors", "DATABASE_PASSWORD": "pw",
               "DATABASE_READ_URL": "postgresql://watchdog@db2/sensors?target_session_attrs=prefer-standby"}

    shared = conninfo_to_dict(Settings.from_env(environ).read_conninfo())
    own = conninfo_to_dict(Settings.from_env(
        {**environ, "DATABASE_READ_URL": "postgresql://watchdog:own@db2/sensors"}).read_conninfo())

    assert (shared["host"], shared["password"], shared["target_session_attrs"]) == ("db2", "pw", "prefer-standby")
    assert (own["host"], own["password"]) == ("db2", "own")
    assert "pw" not in repr(Settings.from_env(environ)) and "db2" not in repr(Settings.from_env(environ))


def test_ca_file_is_shared_with_the_bridge_and_checked_the_same_way(tmp_path: Path) -> None:
    settings = Settings.from_env({"MQTT_URL": "mqtts://broker", "MQTT_CA_FILE": certifi.where()})

    assert settings.mqtt().ca_file == certifi.where() and settings.mqtt().tls
    assert config_error(MQTT_URL="mqtts://broker", MQTT_CA_FILE=str(tmp_path / "none.pem")).variable == "MQTT_CA_FILE"
    assert config_error(MQTT_URL="mqtt://broker", MQTT_CA_FILE=certifi.where()).variable == "MQTT_CA_FILE"


def test_data_loss_must_stay_alerted_long_enough_to_reach_the_threshold() -> None:
    error = config_error(WATCHDOG_DATA_LOSS_CLEAR_S="30", WATCHDOG_INTERVAL_S="20")

    assert error.variable == "WATCHDOG_DATA_LOSS_CLEAR_S"
    assert "40 s" in str(error)


def test_webhook_url_is_secret_everywhere() -> None:
    settings = Settings.from_env({"DISCORD_WEBHOOK_URL": WEBHOOK})

    assert isinstance(settings.discord_webhook_url, SecretStr)
    assert settings.discord_webhook_url.get_secret_value() == WEBHOOK
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


@pytest.mark.parametrize("url", [f"ftp://discord.com/api/webhooks/1/{TOKEN}", f"https:///{TOKEN}", f"{TOKEN}"])
def test_bad_webhook_url_is_refused_without_echoing_it(url: str) -> None:
    error = config_error(DISCORD_WEBHOOK_URL=url)

    assert error.variable == "DISCORD_WEBHOOK_URL"
    assert TOKEN not in str(error)


def test_webhook_url_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "webhook"
    secret.write_text(WEBHOOK + "\n", encoding="utf-8")

    settings = Settings.from_env({"DISCORD_WEBHOOK_URL_FILE": str(secret)})

    assert settings.discord_webhook_url is not None
    assert settings.discord_webhook_url.get_secret_value() == WEBHOOK


def test_secret_file_problems_name_the_file_variable(tmp_path: Path) -> None:
    assert config_error(DISCORD_WEBHOOK_URL_FILE=str(tmp_path / "missing")).variable == "DISCORD_WEBHOOK_URL_FILE"
    assert config_error(DISCORD_WEBHOOK_URL_FILE=str(tmp_path)).variable == "DISCORD_WEBHOOK_URL_FILE"
    secret = tmp_path / "webhook"
    secret.write_text(WEBHOOK, encoding="utf-8")
    both = config_error(DISCORD_WEBHOOK_URL=WEBHOOK, DISCORD_WEBHOOK_URL_FILE=str(secret))
    assert "not both" in str(both)
    assert TOKEN not in str(both)
    secret.write_text(f"ftp://discord.com/{TOKEN}", encoding="utf-8")
    bad = config_error(DISCORD_WEBHOOK_URL_FILE=str(secret))
    assert bad.variable == "DISCORD_WEBHOOK_URL_FILE" and TOKEN not in str(bad)


def test_an_empty_webhook_file_means_no_webhook_like_an_empty_variable(tmp_path: Path) -> None:
    # The compose stack's init writes an empty file when no webhook is configured.
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")

    settings = Settings.from_env({"DISCORD_WEBHOOK_URL_FILE": str(empty)})

    assert settings.discord_webhook_url is None
    assert settings.discord_webhook_url_file == str(empty)
    assert Settings.from_env({"DISCORD_WEBHOOK_URL": " "}).discord_webhook_url is None


# --- README's Watchdog table: same names and defaults as Settings ----------------------------------

def _watchdog_table() -> dict[str, str]:
    return readme_settings_table("WATCHDOG_")


def test_readme_documents_exactly_the_settings() -> None:
    assert set(_watchdog_table()) == {env_name(field) for field in Settings.model_fields}


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_readme_default_matches_settings(field: str) -> None:
    cell = _watchdog_table()[env_name(field)]
    written = re.search(r"`([^`]*)`", cell)
    default = Settings.model_fields[field].default
    if default in (None, "") or field == "health_file":
        assert written is None or "<" in written.group(1), f"{env_name(field)}: {cell!r}"
        return
    assert written, f"default of {env_name(field)} should be in backticks, got {cell!r}"
    parsed = Settings.model_validate({field: written.group(1)})
    assert getattr(parsed, field) == getattr(Settings(), field)


def test_health_max_age_allows_three_intervals_and_one_cycles_timeouts() -> None:
    assert Settings.from_env({}).health_max_age_s == 40  # scripts/local-stack checks with the defaults
    slow = Settings.from_env({"WATCHDOG_INTERVAL_S": "20", "WATCHDOG_BROKER_TIMEOUT_S": "2"})
    assert slow.health_max_age_s == 3 * 20 + 2 + 5
    reader = Settings.from_env({"DATABASE_READ_URL": "postgresql://watchdog@replica/sensors"})
    assert reader.health_max_age_s == 40 + 5, "the reader's probe follows the primary's"
