"""Watchdog settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bridge.config import (
    MqttEndpoint,
    check_database_url,
    load_mqtt_endpoint,
    parse_mqtt_url,
    read_env,
    validate_env,
)
from bridge.errors import ConfigError

# Shared with the bridge, or secrets named the way Discord's docs name them.
_UNPREFIXED = {
    "database_url": "DATABASE_URL",
    "mqtt_url": "MQTT_URL",
    "mqtt_ca_file": "MQTT_CA_FILE",
    "discord_webhook_url": "DISCORD_WEBHOOK_URL",
    "discord_webhook_url_file": "DISCORD_WEBHOOK_URL_FILE",
}
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ROLE_ID = re.compile(r"^[0-9]{1,20}$")

Seconds = Annotated[float, Field(gt=0, le=3600)]


class Settings(BaseModel):
    """Everything the watchdog can be told; see the README's Watchdog table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: SecretStr = SecretStr("postgresql://bridge@127.0.0.1:5432/sensors")
    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    mqtt_ca_file: str = ""
    discord_webhook_url: SecretStr | None = None
    discord_webhook_url_file: str = ""
    client_id: Annotated[str, Field(pattern=_CLIENT_ID.pattern)] = "watchdog-1"
    interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 10.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    remind_s: Annotated[float, Field(ge=0, le=604_800)] = 1800.0
    bridge_workers: str = ""
    min_workers: Annotated[int, Field(ge=0, le=1000)] = 1
    heartbeat_timeout_s: Seconds = 15.0
    stall_s: Seconds = 60.0
    broker_timeout_s: Seconds = 5.0
    database_timeout_s: Seconds = 5.0
    discord_timeout_s: Seconds = 10.0
    data_loss_clear_s: Seconds = 120.0
    mention_roles: str = ""
    health_file: str = ""
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        values = read_env(cls, environ, env_name)
        if "discord_webhook_url_file" in values:
            if "discord_webhook_url" in values:
                raise ConfigError("DISCORD_WEBHOOK_URL_FILE", "set it or DISCORD_WEBHOOK_URL, not both")
            values["discord_webhook_url"] = _read_secret_file(values["discord_webhook_url_file"])
        settings = validate_env(cls, values, env_name)
        settings.check()
        return settings

    def check(self) -> None:
        """Validate the lists and URLs; raise ConfigError (never echoing a secret)."""
        for worker in self.expected_workers:
            if not _CLIENT_ID.match(worker):
                raise ConfigError("WATCHDOG_BRIDGE_WORKERS", f"{worker!r} is not a bridge client id (A-Za-z0-9_.-)")
        for role in self.mention_role_ids:
            if not _ROLE_ID.match(role):
                raise ConfigError("WATCHDOG_MENTION_ROLES", f"{role!r} is not a Discord role id (digits)")
        if self.data_loss_clear_s < self.failure_threshold * self.interval_s:
            raise ConfigError(
                "WATCHDOG_DATA_LOSS_CLEAR_S",
                f"must be at least WATCHDOG_FAILURE_THRESHOLD x WATCHDOG_INTERVAL_S "
                f"({self.failure_threshold * self.interval_s:g} s), or a single loss could never be alerted",
            )
        load_mqtt_endpoint(self.mqtt_url.get_secret_value(), self.mqtt_ca_file)
        check_database_url(self.database_url)
        if self.discord_webhook_url is not None:
            check_webhook_url(self.discord_webhook_url.get_secret_value())

    def mqtt(self) -> MqttEndpoint:
        """The broker endpoint parsed from MQTT_URL and MQTT_CA_FILE."""
        return parse_mqtt_url(self.mqtt_url.get_secret_value(), ca_file=self.mqtt_ca_file)

    @property
    def expected_workers(self) -> tuple[str, ...]:
        """Bridge client ids that must each be alive (WATCHDOG_BRIDGE_WORKERS)."""
        return _split(self.bridge_workers)

    @property
    def mention_role_ids(self) -> tuple[str, ...]:
        """Discord role ids an alert may ping (WATCHDOG_MENTION_ROLES)."""
        return _split(self.mention_roles)

    @property
    def health_path(self) -> str:
        """Where the watchdog records each cycle for the `health` command."""
        return self.health_file or f"/tmp/iot-watchdog-{self.client_id}.health"


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field."""
    return _UNPREFIXED.get(field, f"WATCHDOG_{field.upper()}")


def check_webhook_url(url: str) -> None:
    """Accept http(s)://host/...; raise ConfigError without echoing the URL (it holds the token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("DISCORD_WEBHOOK_URL", "is malformed (expected https://discord.com/api/webhooks/…)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(
            "DISCORD_WEBHOOK_URL", "is not an http(s) URL with a path (expected https://discord.com/api/webhooks/...)"
        )


def _split(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _read_secret_file(path: str) -> str:
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError("DISCORD_WEBHOOK_URL_FILE", f"cannot read {path}: {reason}") from None
    if not url:
        raise ConfigError("DISCORD_WEBHOOK_URL_FILE", f"{path} is empty")
    return url
