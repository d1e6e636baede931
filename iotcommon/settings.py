"""Settings plumbing shared by the bridge, the watchdog and the simulator: connections, secrets, URLs.

Each program's config.py defines its own Settings model on top of Connections
and reads it once at its edge with load_settings(); nothing here reads os.environ.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from iotcommon.errors import ConfigError

# The connection settings (Connections) are shared by the bridge, the watchdog
# and the simulator, so their variables carry no component prefix.
CONNECTION_VARIABLES = {
    "database_url": "DATABASE_URL",
    "database_password": "DATABASE_PASSWORD",
    "database_password_file": "DATABASE_PASSWORD_FILE",
    "mqtt_url": "MQTT_URL",
    "mqtt_password": "MQTT_PASSWORD",
    "mqtt_password_file": "MQTT_PASSWORD_FILE",
    "mqtt_ca_file": "MQTT_CA_FILE",
}
# The programs that only read (watchdog, simulator) may send their reads to a replica.
READ_CONNECTION_VARIABLES = {**CONNECTION_VARIABLES, "database_read_url": "DATABASE_READ_URL"}
# Secret fields that may instead be read from a file (the Docker/Kubernetes
# secrets convention): secret field -> the field holding the file's path.
CONNECTION_SECRET_FILES = {"database_password": "database_password_file", "mqtt_password": "mqtt_password_file"}
# The examples' placeholder: anyone who read them knows it, so it is no password.
PLACEHOLDER_PASSWORD = "change-me"  # noqa: S105 (refused, not used)
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


class Connections(BaseModel):
    """Where the broker and the database are, and the credentials: shared by bridge, watchdog and simulator.

    A password comes from the URL, from DATABASE_PASSWORD / MQTT_PASSWORD, or from
    the file named by *_FILE; one source per connection. A separate password is
    handed to the client as a keyword, never pasted into the URL, so any character
    is safe in it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: SecretStr = SecretStr("postgresql://bridge@127.0.0.1:5432/sensors")
    database_password: SecretStr | None = None
    database_password_file: str = ""
    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    mqtt_password: SecretStr | None = None
    mqtt_password_file: str = ""
    mqtt_ca_file: str = ""

    def mqtt(self) -> MqttEndpoint:
        """The broker endpoint: MQTT_URL and MQTT_CA_FILE, with MQTT_PASSWORD(_FILE) when set."""
        endpoint = parse_mqtt_url(self.mqtt_url.get_secret_value(), ca_file=self.mqtt_ca_file)
        if self.mqtt_password is None:
            return endpoint
        return endpoint.model_copy(update={"password": self.mqtt_password})

    def conninfo(self) -> str:
        """DATABASE_URL with DATABASE_PASSWORD(_FILE), when set, added as the `password` keyword."""
        url = self.database_url.get_secret_value()
        if self.database_password is None:
            return url
        return psycopg.conninfo.make_conninfo(url, password=self.database_password.get_secret_value())

    def check_connections(self) -> None:
        """Validate the URLs, the CA file and the passwords' sources; raise ConfigError (never echoing a secret)."""
        endpoint = load_mqtt_endpoint(self.mqtt_url.get_secret_value(), self.mqtt_ca_file)
        if self.mqtt_password is None:
            check_not_placeholder(endpoint.password, "MQTT_URL")
        else:
            source = "MQTT_PASSWORD_FILE" if self.mqtt_password_file else "MQTT_PASSWORD"
            if endpoint.password is not None:
                raise ConfigError(source, "is set, but MQTT_URL already carries a password; keep one of them")
            if endpoint.username is None:
                raise ConfigError(source, "is set, but MQTT_URL names no user (mqtt://user@host)")
            check_not_placeholder(self.mqtt_password, source)
        url_password = check_database_url(self.database_url).get("password")
        if self.database_password is None:
            check_not_placeholder(SecretStr(url_password) if url_password else None, "DATABASE_URL")
        else:
            source = "DATABASE_PASSWORD_FILE" if self.database_password_file else "DATABASE_PASSWORD"
            if url_password:
                raise ConfigError(source, "is set, but DATABASE_URL already carries a password; keep one of them")
            check_not_placeholder(self.database_password, source)


class ReadConnections(Connections):
    """Connections plus DATABASE_READ_URL: where a program that only reads sends its reads (a replica).

    Unset, reads go to DATABASE_URL. The reader URL's own password wins; without
    one, DATABASE_PASSWORD(_FILE) is handed over too, since a physical replica
    has the primary's roles and passwords.
    """

    database_read_url: SecretStr | None = None

    @property
    def has_reader(self) -> bool:
        """Whether DATABASE_READ_URL names a server of its own (set, and not DATABASE_URL again)."""
        return self.database_read_url is not None and self.database_read_url != self.database_url

    def read_conninfo(self) -> str:
        """DATABASE_READ_URL (else DATABASE_URL), with DATABASE_PASSWORD(_FILE) when it carries no password."""
        if self.database_read_url is None:
            return self.conninfo()
        url = self.database_read_url.get_secret_value()
        if self.database_password is None or psycopg.conninfo.conninfo_to_dict(url).get("password"):
            return url
        return psycopg.conninfo.make_conninfo(url, password=self.database_password.get_secret_value())

    def check_connections(self) -> None:
        """Connections.check_connections, and DATABASE_READ_URL's form and password."""
        super().check_connections()
        if self.database_read_url is not None:
            password = check_database_url(self.database_read_url, "DATABASE_READ_URL").get("password")
            check_not_placeholder(SecretStr(password) if password else None, "DATABASE_READ_URL")


def read_env(model: type[BaseModel], environ: Mapping[str, str], name_of: Callable[[str], str]) -> dict[str, Any]:
    """The non-blank environment values of a settings model's fields, stripped."""
    values: dict[str, Any] = {}
    for field in model.model_fields:
        raw = environ.get(name_of(field))
        if raw is not None and raw.strip() != "":
            values[field] = raw.strip()
    return values


def load_settings(
    model: type[M],
    environ: Mapping[str, str],
    name_of: Callable[[str], str],
    *,
    secret_files: Mapping[str, str] = CONNECTION_SECRET_FILES,
    optional: Collection[str] = (),
) -> M:
    """read_env, then read_secret_files, then validate_env: a settings model from an environment mapping."""
    values = read_secret_files(read_env(model, environ, name_of), secret_files, name_of, optional=optional)
    return validate_env(model, values, name_of)


def read_secret_files(
    values: dict[str, Any],
    secret_files: Mapping[str, str],
    name_of: Callable[[str], str],
    *,
    optional: Collection[str] = (),
) -> dict[str, Any]:
    """The values with each secret read from the file its *_FILE field names; ConfigError naming the variable.

    `secret_files` maps a secret field to the field holding the file's path. Setting
    both is an error; so is an unreadable or empty file, except for the fields in
    `optional`, where an empty file means "not set" (as an empty variable does).
    """
    result = dict(values)
    for field, file_field in secret_files.items():
        path = values.get(file_field)
        if path is None:
            continue
        if field in values:
            raise ConfigError(name_of(file_field), f"set it or {name_of(field)}, not both")
        secret = read_secret_file(name_of(file_field), path, allow_empty=field in optional)
        if secret:
            result[field] = secret
    return result


def read_secret_file(variable: str, path: str, *, allow_empty: bool = False) -> str:
    """The secret in `path`, surrounding whitespace (the trailing newline) stripped; ConfigError naming `variable`.

    The error names the variable and the path, never the content.
    """
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(variable, f"cannot read {path}: {reason}") from None
    if not secret and not allow_empty:
        raise ConfigError(variable, f"{path} is empty")
    return secret


def check_not_placeholder(password: SecretStr | None, variable: str) -> None:
    """Raise ConfigError naming `variable` when the password is the examples' placeholder."""
    if password is not None and password.get_secret_value() == PLACEHOLDER_PASSWORD:
        raise ConfigError(
            variable,
            f"holds the password {PLACEHOLDER_PASSWORD!r}, the examples' placeholder: "
            "anyone who read them knows it; set a real password",
        )


def validate_env(model: type[M], values: dict[str, Any], name_of: Callable[[str], str]) -> M:
    """model.model_validate(values), with pydantic's first error as a ConfigError naming the variable."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise ConfigError(name_of(field), first["msg"]) from None


def check_database_url(url: SecretStr, variable: str = "DATABASE_URL") -> dict[str, Any]:
    """The URL's parameters; ConfigError naming `variable` (never echoing the URL) when it is no PostgreSQL URL."""
    try:
        return psycopg.conninfo.conninfo_to_dict(url.get_secret_value())
    except psycopg.ProgrammingError:
        raise ConfigError(
            variable,
            "is not a valid PostgreSQL URL or conninfo (expected postgresql://user:password@host:port/dbname)",
        ) from None


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
