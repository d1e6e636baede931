"""iotcommon.settings: the connections every program reads alike (MQTT_URL, MQTT_CA_FILE, DATABASE_URL,
passwords and their *_FILE variables), through the bridge's Settings and, where said, the other programs'.

The bridge's own settings (its BRIDGE_* variables, the README table) are tests/unit/test_config.py.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import certifi
import pytest
from fakes import config_error, settings_from
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from bridge.config import Settings
from iotcommon.errors import ConfigError
from iotcommon.settings import Connections, MqttEndpoint, parse_mqtt_url
from simulator.config import Settings as SimulatorSettings
from watchdog.config import Settings as WatchdogSettings

MQTT_PASSWORD = "s3cr3t-mqtt-pw"
DB_PASSWORD = "s3cr3t-db-pw"


def _traceback(error: BaseException) -> str:
    """What logger.exception would print, chained causes included."""
    return "".join(traceback.format_exception(error))


# --- MQTT_URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("mqtt://broker", MqttEndpoint(host="broker", port=1883)),
        ("mqtt://broker/", MqttEndpoint(host="broker", port=1883)),
        ("mqtts://broker", MqttEndpoint(host="broker", port=8883, tls=True)),
        ("mqtt://broker:1884", MqttEndpoint(host="broker", port=1884)),
        ("mqtts://broker:443", MqttEndpoint(host="broker", port=443, tls=True)),
        ("mqtt://10.0.0.5:1883", MqttEndpoint(host="10.0.0.5", port=1883)),
        ("mqtt://[::1]:1883", MqttEndpoint(host="::1", port=1883)),
        ("mqtt://alice@broker", MqttEndpoint(host="broker", port=1883, username="alice")),
    ],
)
def test_mqtt_url_is_parsed(url: str, endpoint: MqttEndpoint) -> None:
    assert parse_mqtt_url(url) == endpoint


def test_mqtt_url_credentials_are_unescaped() -> None:
    endpoint = parse_mqtt_url("mqtt://ali%40ce:p%40ss%3Aw%2Frd%25@broker:1883")

    assert endpoint.username == "ali@ce"
    assert endpoint.password is not None
    assert endpoint.password.get_secret_value() == "p@ss:w/rd%"
    assert "p@ss" not in repr(endpoint)


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{MQTT_PASSWORD}@broker",
        f"tcp://user:{MQTT_PASSWORD}@broker:1883",
        f"user:{MQTT_PASSWORD}@broker:1883",
        "broker:1883",
        f"mqtt://user:{MQTT_PASSWORD}@",
        f"mqtt://user:{MQTT_PASSWORD}@:1883",
        f"mqtt://user:{MQTT_PASSWORD}@broker/sensors",
        f"mqtt://user:{MQTT_PASSWORD}@broker?tls=1",
        f"mqtt://user:{MQTT_PASSWORD}@broker:port",
        f"mqtt://user:{MQTT_PASSWORD}@broker:99999",
        f"mqtt://user:{MQTT_PASSWORD}@[::1",
    ],
)
def test_bad_mqtt_url_names_variable_without_the_password(url: str) -> None:
    error = config_error(MQTT_URL=url)

    assert error.variable == "MQTT_URL"
    assert MQTT_PASSWORD not in str(error)
    assert MQTT_PASSWORD not in repr(error)
    assert MQTT_PASSWORD not in _traceback(error)


def test_mqtt_url_port_zero_is_refused() -> None:
    # Port 0 cannot be connected to; silently using 1883 instead hides the typo.
    assert config_error(MQTT_URL="mqtt://broker:0").variable == "MQTT_URL"


# --- MQTT_CA_FILE -----------------------------------------------------------------------------

CA_BUNDLE = certifi.where()  # any readable PEM bundle will do


def test_ca_file_goes_with_mqtts() -> None:
    settings = settings_from(MQTT_URL="mqtts://broker", MQTT_CA_FILE=f" {CA_BUNDLE} ")

    assert settings.mqtt() == MqttEndpoint(host="broker", port=8883, tls=True, ca_file=CA_BUNDLE)
    assert Settings.from_env({"MQTT_URL": "mqtts://broker"}).mqtt().ca_file is None  # the system CAs


def test_ca_file_with_plain_mqtt_is_an_error_not_silently_ignored() -> None:
    error = config_error(MQTT_URL=f"mqtt://bridge:{MQTT_PASSWORD}@broker", MQTT_CA_FILE=CA_BUNDLE)

    assert error.variable == "MQTT_CA_FILE"
    assert "MQTT_URL is mqtt://" in error.problem and "mqtts://" in error.problem
    assert MQTT_PASSWORD not in str(error)


def test_ca_file_is_checked_only_when_the_url_is_valid() -> None:
    # A bad URL is the first thing to fix; its error must not hide behind the CA file's.
    assert config_error(MQTT_URL="mqtts://", MQTT_CA_FILE="/nowhere").variable == "MQTT_URL"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.pem", None, "cannot read {path}: No such file or directory"),
        ("folder", "dir", "cannot read {path}: Is a directory"),
        ("empty.pem", "", "{path} holds no PEM certificate"),
        ("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "{path} holds no PEM"),
    ],
)
def test_unusable_ca_file_names_the_variable_and_the_path(
    tmp_path: Path, name: str, content: str | None, problem: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content, encoding="utf-8")

    error = config_error(MQTT_URL="mqtts://broker", MQTT_CA_FILE=str(path))

    assert error.variable == "MQTT_CA_FILE"
    assert error.problem.startswith(problem.format(path=path))


# --- secrets ----------------------------------------------------------------------------------


def test_passwords_never_show_in_repr_or_str() -> None:
    settings = settings_from(
        MQTT_URL=f"mqtts://bridge:{MQTT_PASSWORD}@broker:8883",
        DATABASE_URL=f"postgresql://bridge:{DB_PASSWORD}@db:5432/sensors",
    )

    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.mqtt())):
        assert MQTT_PASSWORD not in text
        assert DB_PASSWORD not in text
    assert isinstance(settings.database_url, SecretStr)
    assert settings.mqtt().password == SecretStr(MQTT_PASSWORD)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        f"http://bridge:{DB_PASSWORD}@db/sensors",
        f"postgresql://bridge:{DB_PASSWORD}@db/sensors?nosuchoption=1",
        f"host=db password='{DB_PASSWORD}",
    ],
)
def test_bad_database_url_names_variable_without_echoing_it(url: str) -> None:
    error = config_error(DATABASE_URL=url)

    assert error.variable == "DATABASE_URL"
    assert DB_PASSWORD not in str(error)
    assert url not in str(error)
    assert DB_PASSWORD not in _traceback(error)


def test_conninfo_form_is_accepted() -> None:
    settings = settings_from(DATABASE_URL=f"host=db dbname=sensors user=bridge password={DB_PASSWORD}")

    assert DB_PASSWORD not in repr(settings)


@pytest.mark.parametrize("url", [
    "postgresql://bridge@db1:5432,db2:6543/sensors?target_session_attrs=read-write",
    "host=db1,db2 port=5432,6543 dbname=sensors user=bridge target_session_attrs=read-write",
])
def test_a_multi_host_database_url_keeps_every_host_with_a_separate_password(url: str) -> None:
    """A primary and its standby: libpq picks the writable one (docs/high-availability.md)."""
    settings = settings_from(DATABASE_URL=url, DATABASE_PASSWORD="p@ss/w%41:rd")

    assert conninfo_to_dict(settings.conninfo()) == {
        "host": "db1,db2", "port": "5432,6543", "dbname": "sensors", "user": "bridge",
        "target_session_attrs": "read-write", "password": "p@ss/w%41:rd",
    }


# --- passwords from variables and files (the *_FILE convention) -------------------------------

# Each breaks a URL it is pasted into raw: @ ends the credentials, / starts the path,
# %41 decodes to A, and : splits user from password.
AWKWARD_PASSWORDS = ["p@ss", "a/b", "%41", "us:er", "p@ss/w%41:rd 'q\"\\"]


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
def test_passwords_from_files_reach_the_clients_intact(tmp_path: Path, password: str) -> None:
    settings = settings_from(
        DATABASE_URL="postgresql://bridge@db:5432/sensors",
        DATABASE_PASSWORD_FILE=secret_file(tmp_path, "db", password + "\n"),
        MQTT_URL="mqtt://bridge@broker:1883",
        MQTT_PASSWORD_FILE=secret_file(tmp_path, "mqtt", password + "\n"),
    )

    assert settings.mqtt() == MqttEndpoint(host="broker", port=1883, username="bridge", password=SecretStr(password))
    conninfo = conninfo_to_dict(settings.conninfo())
    assert conninfo == {"host": "db", "port": "5432", "dbname": "sensors", "user": "bridge", "password": password}
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.mqtt())):
        assert password not in text


# The simulator and the watchdog read their connections with the same iotcommon.settings as the bridge.
@pytest.mark.parametrize(("from_env", "mqtt_user", "database_user", "password"), [
    pytest.param(SimulatorSettings.from_env, "simulator", "reader", "s1m@ul/at%41:or", id="simulator"),
    pytest.param(WatchdogSettings.from_env, "watchdog", "watchdog", "w@tch/dog%41:pw", id="watchdog"),
])
def test_the_other_programs_read_passwords_from_files_as_the_bridge_does(
    tmp_path: Path, from_env: Callable[[Mapping[str, str]], Connections], mqtt_user: str, database_user: str,
    password: str,
) -> None:
    settings = from_env({
        "MQTT_URL": f"mqtt://{mqtt_user}@broker", "MQTT_PASSWORD_FILE": secret_file(tmp_path, "mqtt", password + "\n"),
        "DATABASE_URL": f"postgresql://{database_user}@db/sensors",
        "DATABASE_PASSWORD_FILE": secret_file(tmp_path, "db", password + "\n"),
    })

    assert settings.mqtt().password == SecretStr(password)
    assert conninfo_to_dict(settings.conninfo())["password"] == password
    assert password not in repr(settings)
    for environ, variable in (({"DATABASE_PASSWORD_FILE": str(tmp_path / "none")}, "DATABASE_PASSWORD_FILE"),
                              ({"MQTT_URL": f"mqtt://{mqtt_user}:change-me@broker"}, "MQTT_URL")):
        with pytest.raises(ConfigError) as caught:
            from_env(environ)
        assert caught.value.variable == variable


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
def test_passwords_from_plain_variables_reach_the_clients_intact(password: str) -> None:
    settings = settings_from(
        DATABASE_URL="postgresql://bridge@db/sensors", DATABASE_PASSWORD=password,
        MQTT_URL="mqtts://bridge@broker", MQTT_PASSWORD=password,
    )

    assert settings.mqtt().password == SecretStr(password)
    assert conninfo_to_dict(settings.conninfo())["password"] == password
    assert password not in repr(settings)


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS)
def test_percent_encoded_passwords_in_urls_are_decoded(password: str) -> None:
    encoded = quote(password, safe="")
    settings = settings_from(
        DATABASE_URL=f"postgresql://bridge:{encoded}@db/sensors", MQTT_URL=f"mqtt://bridge:{encoded}@broker"
    )

    assert settings.mqtt().password == SecretStr(password)
    assert conninfo_to_dict(settings.conninfo())["password"] == password


def test_without_a_separate_password_the_url_is_used_as_it_is() -> None:
    url = f"postgresql://bridge:{DB_PASSWORD}@db/sensors?sslmode=require"

    assert settings_from(DATABASE_URL=url).conninfo() == url


@pytest.mark.parametrize(("variable", "file_variable"), [
    ("DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE"), ("MQTT_PASSWORD", "MQTT_PASSWORD_FILE"),
])
def test_a_password_and_its_file_together_are_refused_naming_both(
    tmp_path: Path, variable: str, file_variable: str
) -> None:
    error = config_error(**{variable: DB_PASSWORD, file_variable: secret_file(tmp_path, "pw", MQTT_PASSWORD)})

    assert error.variable == file_variable
    assert variable in error.problem
    assert DB_PASSWORD not in str(error) and MQTT_PASSWORD not in str(error)


@pytest.mark.parametrize(("file_variable", "url_variable", "url"), [
    ("DATABASE_PASSWORD_FILE", "DATABASE_URL", f"postgresql://bridge:{DB_PASSWORD}@db/sensors"),
    ("MQTT_PASSWORD_FILE", "MQTT_URL", f"mqtt://bridge:{DB_PASSWORD}@broker"),
])
def test_a_password_file_with_a_password_in_the_url_is_refused(
    tmp_path: Path, file_variable: str, url_variable: str, url: str
) -> None:
    error = config_error(**{url_variable: url, file_variable: secret_file(tmp_path, "pw", MQTT_PASSWORD)})

    assert error.variable == file_variable
    assert f"{url_variable} already carries a password" in error.problem
    assert DB_PASSWORD not in _traceback(error) and MQTT_PASSWORD not in _traceback(error)


def test_an_mqtt_password_needs_a_user_in_the_url() -> None:
    error = config_error(MQTT_URL="mqtt://broker", MQTT_PASSWORD=MQTT_PASSWORD)

    assert error.variable == "MQTT_PASSWORD"
    assert "names no user" in error.problem


@pytest.mark.parametrize("file_variable", ["DATABASE_PASSWORD_FILE", "MQTT_PASSWORD_FILE"])
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("dir", "cannot read {path}: Is a directory"),
        ("", "{path} is empty"),
        ("\n", "{path} is empty"),
        (b"\xff\xfe" + MQTT_PASSWORD.encode(), "cannot read {path}: UnicodeDecodeError"),
    ],
)
def test_unusable_password_files_name_the_variable_and_the_path_never_the_content(
    tmp_path: Path, file_variable: str, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "secret"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")

    error = config_error(
        DATABASE_URL="postgresql://bridge@db/sensors", MQTT_URL="mqtt://bridge@broker", **{file_variable: str(path)}
    )

    assert error.variable == file_variable
    assert error.problem == problem.format(path=path)
    assert MQTT_PASSWORD not in _traceback(error)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MQTT_URL": "mqtt://bridge:{pw}@broker"}, "MQTT_URL"),
        ({"MQTT_URL": "mqtt://bridge@broker", "MQTT_PASSWORD": "{pw}"}, "MQTT_PASSWORD"),
        ({"MQTT_URL": "mqtt://bridge@broker", "MQTT_PASSWORD_FILE": "{pw}\n"}, "MQTT_PASSWORD_FILE"),
        ({"DATABASE_URL": "postgresql://bridge:{pw}@db/sensors"}, "DATABASE_URL"),
        ({"DATABASE_URL": "host=db user=bridge password={pw}"}, "DATABASE_URL"),
        ({"DATABASE_PASSWORD": "{pw}"}, "DATABASE_PASSWORD"),
        ({"DATABASE_PASSWORD_FILE": "{pw}\n"}, "DATABASE_PASSWORD_FILE"),
    ],
)
def test_the_examples_placeholder_password_is_refused_saying_why(
    tmp_path: Path, environ: dict[str, str], variable: str
) -> None:
    def with_password(password: str) -> dict[str, str]:
        values = {key: value.format(pw=password) for key, value in environ.items()}
        return {key: secret_file(tmp_path, key, v) if key.endswith("_FILE") else v for key, v in values.items()}

    error = config_error(**with_password("change-me"))

    assert error.variable == variable
    assert "placeholder" in error.problem and "set a real password" in error.problem
    settings_from(**with_password("change-me-2"))  # only the placeholder itself is refused
