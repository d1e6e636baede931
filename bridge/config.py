"""Bridge settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from bridge.errors import ConfigError

# Fields whose environment variable is not BRIDGE_<FIELD>: shared with the
# watchdog and the simulator, so they carry no component prefix.
_UNPREFIXED = {"database_url": "DATABASE_URL", "mqtt_url": "MQTT_URL", "mqtt_ca_file": "MQTT_CA_FILE"}
_MQTT_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}
M = TypeVar("M", bound=BaseModel)


class MqttEndpoint(BaseModel):
    """Where and how to reach the broker, parsed from MQTT_URL."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None  # None: the system CAs verify the broker


class Settings(BaseModel):
    """Everything a bridge worker can be told; see the README's configuration table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: SecretStr = SecretStr("postgresql://bridge@127.0.0.1:5432/sensors")
    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    mqtt_ca_file: str = ""
    client_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "bridge-1"
    share_group: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/+#]+$")] = "bridge"
    topic: Annotated[str, Field(min_length=1, max_length=256)] = "sensors/+/readings"
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    flush_ms: Annotated[int, Field(ge=1, le=60_000)] = 50
    max_in_flight: Annotated[int, Field(ge=1, le=65_535)] = 2000
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_295)] = 259_200
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    shutdown_grace_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_payload_bytes: Annotated[int, Field(ge=256, le=10_000_000)] = 65_536
    max_future_s: Annotated[int, Field(ge=0, le=31_536_000)] = 300
    db_retry_max_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    statement_timeout_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000
    startup_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    health_file: str = ""
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        settings = validate_env(cls, read_env(cls, environ, env_name), env_name)
        settings.check()
        return settings

    def check(self) -> None:
        """Validate the cross-field rules and the URLs; raise ConfigError."""
        if self.max_in_flight < self.batch_size:
            raise ConfigError(
                "BRIDGE_MAX_IN_FLIGHT",
                f"must be at least BRIDGE_BATCH_SIZE ({self.batch_size}), "
                "or batches could never fill",
            )
        load_mqtt_endpoint(self.mqtt_url.get_secret_value(), self.mqtt_ca_file)
        check_database_url(self.database_url)

    def mqtt(self) -> MqttEndpoint:
        """The broker endpoint parsed from MQTT_URL and MQTT_CA_FILE."""
        return parse_mqtt_url(self.mqtt_url.get_secret_value(), ca_file=self.mqtt_ca_file)

    @property
    def subscription(self) -> str:
        """The shared subscription every worker of the group uses."""
        return f"$share/{self.share_group}/{self.topic}"

    @property
    def health_path(self) -> str:
        """Where the worker records its health for the `health` command."""
        return self.health_file or f"/tmp/iot-bridge-{self.client_id}.health"


def read_env(model: type[BaseModel], environ: Mapping[str, str], name_of: Callable[[str], str]) -> dict[str, Any]:
    """The non-blank environment values of a settings model's fields, stripped."""
    values: dict[str, Any] = {}
    for field in model.model_fields:
        raw = environ.get(name_of(field))
        if raw is not None and raw.strip() != "":
            values[field] = raw.strip()
    return values


def validate_env(model: type[M], values: dict[str, Any], name_of: Callable[[str], str]) -> M:
    """model.model_validate(values), with pydantic's first error as a ConfigError naming the variable."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise ConfigError(name_of(field), first["msg"]) from None


def check_database_url(url: SecretStr) -> None:
    """Raise ConfigError naming DATABASE_URL (never echoing it) when it is no PostgreSQL URL."""
    try:
        psycopg.conninfo.conninfo_to_dict(url.get_secret_value())
    except psycopg.ProgrammingError:
        raise ConfigError(
            "DATABASE_URL",
            "is not a valid PostgreSQL URL or conninfo (expected postgresql://user:password@host:port/dbname)",
        ) from None


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field."""
    return _UNPREFIXED.get(field, f"BRIDGE_{field.upper()}")


def load_mqtt_endpoint(url: str, ca_file: str = "") -> MqttEndpoint:
    """parse_mqtt_url, then check that the CA file (if any) holds certificates; raise ConfigError."""
    endpoint = parse_mqtt_url(url, ca_file=ca_file)
    if endpoint.ca_file is not None:
        check_ca_file(endpoint.ca_file)
    return endpoint


def check_ca_file(path: str) -> None:
    """Raise ConfigError naming MQTT_CA_FILE unless `path` is a readable bundle of PEM certificates."""
    # Loading it the way the TLS context will turns a typo into a start-up
    # error instead of an ssl traceback from inside paho at the first connect.
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # an OSError too, so caught first
        raise ConfigError("MQTT_CA_FILE", f"{path} holds no PEM certificate ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError("MQTT_CA_FILE", f"cannot read {path}: {exc.strerror or exc}") from None


def parse_mqtt_url(url: str, *, ca_file: str = "") -> MqttEndpoint:
    """Parse mqtt://[user:password@]host[:port] (mqtts:// for TLS); never echo the password.

    `ca_file` (MQTT_CA_FILE) replaces the system CAs for mqtts://; with mqtt:// it is an error.
    """
    problem = "expected mqtt://[user:password@]host[:port] or mqtts://..."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("MQTT_URL", f"is malformed; {problem}") from None
    if parts.scheme not in _MQTT_SCHEMES or not parts.hostname:
        raise ConfigError("MQTT_URL", f"has scheme {parts.scheme!r} or no host; {problem}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError("MQTT_URL", f"must not have a path or query; {problem}")
    if port == 0:
        raise ConfigError("MQTT_URL", f"port 0 is not a broker port; {problem}")
    if parts.password is not None and not parts.username:
        raise ConfigError("MQTT_URL", f"has a password but no user name; {problem}")
    default_port, tls = _MQTT_SCHEMES[parts.scheme]
    if ca_file and not tls:
        # Silently ignoring it would leave a user believing the link is verified.
        raise ConfigError("MQTT_CA_FILE", "is set, but MQTT_URL is mqtt:// (no TLS); use mqtts:// or unset it")
    password = SecretStr(unquote(parts.password)) if parts.password is not None else None
    return MqttEndpoint(
        host=parts.hostname,
        port=port if port is not None else default_port,
        username=unquote(parts.username) if parts.username else None,
        password=password,
        tls=tls,
        ca_file=ca_file or None,
    )
