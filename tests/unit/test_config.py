"""bridge.config: the bridge's settings read from a mapping, validated with errors that name the variable.

The connections every program reads alike (MQTT_URL, DATABASE_URL, passwords and their files) are
iotcommon.settings': tests/unit/test_iotcommon_settings.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fakes import config_error, settings_from
from pydantic import SecretStr
from readme_tables import readme_settings_table

from bridge.config import Settings, env_name, former_names
from bridge.store.revisions import OnConflict
from iotcommon.errors import SetupError
from iotcommon.settings import MqttEndpoint

# --- defaults and reading the environment -----------------------------------------------------


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.database_url.get_secret_value() == "postgresql://bridge@127.0.0.1:5432/sensors"
    assert settings.mqtt() == MqttEndpoint(host="127.0.0.1", port=1883)
    assert settings.client_id == "bridge-1"
    assert settings.share_group == "bridge"
    assert settings.topic == "sensors/+/readings"
    assert settings.batch_size == 500
    assert settings.linger_ms == 0
    assert settings.max_in_flight >= settings.batch_size
    assert settings.session_expiry_s >= 86_400
    assert settings.heartbeat_s == 5.0
    assert settings.max_payload_bytes == 65_536
    assert settings.max_future_s == 300
    assert settings.health_path == "/tmp/iot-bridge-bridge-1.health"


def test_from_env_ignores_unrelated_variables() -> None:
    assert Settings.from_env({"PATH": "/bin", "BRIDGE": "x", "HOME": "/root"}) == Settings.from_env({})


def test_empty_or_blank_value_means_default() -> None:
    assert settings_from(BRIDGE_BATCH_SIZE="", BRIDGE_CLIENT_ID="  ") == Settings.from_env({})


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("BRIDGE_CLIENT_ID", "worker-7", "client_id", "worker-7"),
        ("BRIDGE_SHARE_GROUP", "ingest", "share_group", "ingest"),
        ("BRIDGE_TOPIC", "site/+/readings", "topic", "site/+/readings"),
        ("BRIDGE_BATCH_SIZE", "250", "batch_size", 250),
        ("BRIDGE_BATCH_SIZE", " 42 ", "batch_size", 42),
        ("BRIDGE_LINGER_MS", "20", "linger_ms", 20),
        ("BRIDGE_LINGER_MS", "0", "linger_ms", 0),
        ("BRIDGE_MAX_IN_FLIGHT", "4000", "max_in_flight", 4000),
        ("BRIDGE_SESSION_EXPIRY_S", "86400", "session_expiry_s", 86_400),
        ("BRIDGE_KEEPALIVE_S", "10", "keepalive_s", 10),
        ("BRIDGE_HEARTBEAT_S", "0.5", "heartbeat_s", 0.5),
        ("BRIDGE_SHUTDOWN_GRACE_S", "3", "shutdown_grace_s", 3.0),
        ("BRIDGE_MAX_PAYLOAD_BYTES", "1024", "max_payload_bytes", 1024),
        ("BRIDGE_MAX_FUTURE_S", "0", "max_future_s", 0),
        ("BRIDGE_DB_RETRY_MAX_S", "2.5", "db_retry_max_s", 2.5),
        ("BRIDGE_STATEMENT_TIMEOUT_MS", "500", "statement_timeout_ms", 500),
        ("BRIDGE_STARTUP_TIMEOUT_S", "7", "startup_timeout_s", 7.0),
        ("BRIDGE_HEALTH_FILE", "/run/bridge.health", "health_file", "/run/bridge.health"),
        ("BRIDGE_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("BRIDGE_ON_CONFLICT", "update", "on_conflict", OnConflict.UPDATE),
        ("BRIDGE_ON_CONFLICT", "keep", "on_conflict", OnConflict.KEEP),
    ],
)
def test_each_variable_is_read(variable: str, raw: str, field: str, expected: Any) -> None:
    settings = Settings.from_env({variable: raw})

    assert env_name(field) == variable
    assert getattr(settings, field) == expected


def test_urls_are_read() -> None:
    settings = settings_from(DATABASE_URL="postgresql://u@db:6543/x", MQTT_URL="mqtts://broker")

    assert settings.database_url.get_secret_value() == "postgresql://u@db:6543/x"
    assert settings.mqtt() == MqttEndpoint(host="broker", port=8883, tls=True)


def test_env_name_matches_field_name() -> None:
    assert env_name("batch_size") == "BRIDGE_BATCH_SIZE"
    assert env_name("database_url") == "DATABASE_URL"
    assert env_name("mqtt_url") == "MQTT_URL"
    assert env_name("mqtt_ca_file") == "MQTT_CA_FILE"


def test_subscription_is_shared() -> None:
    settings = settings_from(BRIDGE_SHARE_GROUP="ingest", BRIDGE_TOPIC="sensors/+/readings")

    assert settings.subscription == "$share/ingest/sensors/+/readings"
    assert Settings.from_env({}).subscription == "$share/bridge/sensors/+/readings"


def test_health_path_follows_client_id_unless_set() -> None:
    assert settings_from(BRIDGE_CLIENT_ID="w2").health_path == "/tmp/iot-bridge-w2.health"
    assert settings_from(BRIDGE_CLIENT_ID="w2", BRIDGE_HEALTH_FILE="/h").health_path == "/h"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ValueError):
        settings.batch_size = 1  # type: ignore[misc]


# --- invalid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("BRIDGE_BATCH_SIZE", "0"),
        ("BRIDGE_BATCH_SIZE", "-1"),
        ("BRIDGE_BATCH_SIZE", "1e3"),
        ("BRIDGE_LINGER_MS", "abc"),
        ("BRIDGE_LINGER_MS", "-1"),
        ("BRIDGE_LINGER_MS", "60001"),
        ("BRIDGE_FLUSH_MS", "abc"),
        ("BRIDGE_MAX_IN_FLIGHT", "70000"),
        ("BRIDGE_SESSION_EXPIRY_S", "10"),
        ("BRIDGE_KEEPALIVE_S", "1"),
        ("BRIDGE_HEARTBEAT_S", "0"),
        ("BRIDGE_HEARTBEAT_S", "nan"),
        ("BRIDGE_HEARTBEAT_S", "inf"),
        ("BRIDGE_SHUTDOWN_GRACE_S", "-1"),
        ("BRIDGE_MAX_PAYLOAD_BYTES", "10"),
        ("BRIDGE_MAX_FUTURE_S", "-1"),
        ("BRIDGE_DB_RETRY_MAX_S", "soon"),
        ("BRIDGE_CLIENT_ID", "a/b"),
        ("BRIDGE_CLIENT_ID", "x" * 65),
        ("BRIDGE_SHARE_GROUP", "a/b"),
        ("BRIDGE_SHARE_GROUP", "#"),
        ("BRIDGE_LOG_LEVEL", "LOUD"),
        ("BRIDGE_ON_CONFLICT", "overwrite"),
        ("BRIDGE_ON_CONFLICT", "UPDATE"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, raw: str) -> None:
    error = config_error(**{variable: raw})

    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")
    assert error.problem
    assert isinstance(error, SetupError)


def test_former_name_and_current_name_together_are_refused() -> None:
    error = config_error(BRIDGE_FLUSH_MS="50", BRIDGE_LINGER_MS="0")

    assert error.variable == "BRIDGE_FLUSH_MS"
    assert "BRIDGE_LINGER_MS" in error.problem


def test_a_former_name_is_still_read() -> None:
    assert settings_from(BRIDGE_FLUSH_MS="20").linger_ms == 20


def test_former_names_are_listed_for_the_start_up_warning() -> None:
    assert former_names({"BRIDGE_FLUSH_MS": "50"}) == ["BRIDGE_FLUSH_MS (now BRIDGE_LINGER_MS)"]
    assert former_names({"BRIDGE_LINGER_MS": "50"}) == []


def test_max_in_flight_below_batch_size_names_both() -> None:
    error = config_error(BRIDGE_BATCH_SIZE="100", BRIDGE_MAX_IN_FLIGHT="99")

    assert error.variable == "BRIDGE_MAX_IN_FLIGHT"
    assert "BRIDGE_BATCH_SIZE" in error.problem
    assert settings_from(BRIDGE_BATCH_SIZE="100", BRIDGE_MAX_IN_FLIGHT="100").max_in_flight == 100


# --- README configuration table ---------------------------------------------------------------

_CODE = re.compile(r"`([^`]*)`")

def _model_default(field: str) -> str:
    default = Settings.model_fields[field].default
    return default.get_secret_value() if isinstance(default, SecretStr) else default


def test_readme_documents_exactly_the_settings() -> None:
    documented = set(readme_settings_table())

    expected = {env_name(field) for field in Settings.model_fields}
    assert documented == expected, (
        f"missing from README: {sorted(expected - documented)}; not settings: {sorted(documented - expected)}"
    )


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_readme_default_matches_settings(field: str) -> None:
    cell = readme_settings_table().get(env_name(field))
    assert cell is not None, f"{env_name(field)} is not in the README table"
    code = _CODE.search(cell)
    if _model_default(field) in ("", None) and field != "health_file":
        # An empty default means "not set"; the cell says in words what happens then.
        assert code is None, f"{env_name(field)} has no default value; got {cell!r}"
        return
    assert code, f"default of {env_name(field)} should be written in backticks, got {cell!r}"
    written = code.group(1)

    if field == "health_file":
        # The model default "" means "derive it from the client id" (Settings.health_path).
        assert _model_default(field) == ""
        assert written == Settings.from_env({}).health_path.replace("bridge-1", "<client_id>")
        return
    # Read the README's default the way the environment would be read, so `5` and 5.0 agree.
    parsed = Settings.model_validate({field: written})
    assert getattr(parsed, field) == getattr(Settings(), field), (
        f"README says {env_name(field)} defaults to {written!r}; Settings says {_model_default(field)!r}"
    )


def test_health_max_age_is_three_heartbeats() -> None:
    assert settings_from().health_max_age_s == 15  # scripts/local-stack checks with the defaults
    assert settings_from(BRIDGE_HEARTBEAT_S="0.5").health_max_age_s == 1.5
