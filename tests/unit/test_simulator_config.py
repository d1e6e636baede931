"""Simulator settings: the bridge's connection variables, its own default database, the README's table."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr
from readme_tables import readme_tables

from iotcommon.errors import ConfigError
from iotcommon.settings import READ_CONNECTION_VARIABLES
from simulator.config import Settings, env_name


def test_defaults_are_a_local_broker_and_the_owner_database() -> None:
    settings = Settings.from_env({})

    assert (settings.mqtt().host, settings.mqtt().port, settings.mqtt().password) == ("127.0.0.1", 1883, None)
    assert settings.conninfo() == "postgresql://postgres@127.0.0.1:5432/sensors"


@pytest.mark.parametrize(("environ", "variable"), [
    ({"MQTT_URL": "mqtt://simulator:change-me@broker"}, "MQTT_URL"),
    ({"MQTT_URL": "mqtt://simulator@broker", "MQTT_PASSWORD": "x", "MQTT_PASSWORD_FILE": "/x"},
     "MQTT_PASSWORD_FILE"),
    ({"DATABASE_PASSWORD_FILE": "/nonexistent/reader-password"}, "DATABASE_PASSWORD_FILE"),
    ({"DATABASE_URL": "mysql://reader@db"}, "DATABASE_URL"),
])
def test_bad_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert caught.value.variable == variable


def test_every_variable_is_a_shared_connection_variable() -> None:
    assert {env_name(field) for field in Settings.model_fields} == set(READ_CONNECTION_VARIABLES.values())


def test_verify_reads_the_replica_and_asks_the_primary_only_when_there_is_one() -> None:
    alone = Settings.from_env({"DATABASE_URL": "postgresql://reader@db1/sensors"})
    paired = Settings.from_env({"DATABASE_URL": "postgresql://reader@db1/sensors", "DATABASE_PASSWORD": "pw",
                                "DATABASE_READ_URL": "postgresql://reader@db2/sensors"})

    assert not alone.has_reader and alone.read_conninfo() == "postgresql://reader@db1/sensors"
    assert paired.has_reader and "host=db2" in paired.read_conninfo() and "password=pw" in paired.read_conninfo()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_READ_URL": "mysql://reader@db2"})
    assert caught.value.variable == "DATABASE_READ_URL"


def _readme_simulator_table() -> dict[str, str]:
    """The variables table of the README's Simulator section: name -> default cell."""
    [table] = readme_tables("Simulator")
    return table


def test_readme_documents_exactly_the_settings_with_their_defaults() -> None:
    table = _readme_simulator_table()

    assert set(table) == {env_name(field) for field in Settings.model_fields}
    for field, info in Settings.model_fields.items():
        default = info.default.get_secret_value() if isinstance(info.default, SecretStr) else info.default
        written = re.search(r"`([^`]*)`", table[env_name(field)])
        if default in (None, ""):
            assert written is None, f"{env_name(field)}: {table[env_name(field)]!r}"
        else:
            assert written is not None and written.group(1) == default, f"{env_name(field)} default"
