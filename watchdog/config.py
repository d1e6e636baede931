"""Watchdog settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from iotcommon.errors import ConfigError
from iotcommon.settings import CONNECTION_SECRET_FILES, READ_CONNECTION_VARIABLES, ReadConnections, load_settings

# Shared with the bridge, or secrets named the way Discord's docs name them.
_UNPREFIXED = {
    **READ_CONNECTION_VARIABLES,
    "discord_webhook_url": "DISCORD_WEBHOOK_URL",
    "discord_webhook_url_file": "DISCORD_WEBHOOK_URL_FILE",
}
_SECRET_FILES = {**CONNECTION_SECRET_FILES, "discord_webhook_url": "discord_webhook_url_file"}
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ROLE_ID = re.compile(r"^[0-9]{1,20}$")

Seconds = Annotated[float, Field(gt=0, le=3600)]


class Settings(ReadConnections):
    """Everything the watchdog can be told; see the README's Watchdog table."""

    discord_webhook_url: SecretStr | None = None
    discord_webhook_url_file: str = ""
    client_id: Annotated[str, Field(pattern=_CLIENT_ID.pattern)] = "watchdog-1"
    interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 10.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    remind_s: Annotated[float, Field(ge=0, le=604_800)] = 1800.0
    bridge_workers: str = ""
    site_bridges: str = ""
    min_workers: Annotated[int, Field(ge=0, le=1000)] = 1
    heartbeat_timeout_s: Seconds = 15.0
    stall_s: Seconds = 60.0
    broker_timeout_s: Seconds = 5.0
    database_timeout_s: Seconds = 5.0
    discord_timeout_s: Seconds = 10.0
    data_loss_clear_s: Seconds = 120.0
    min_partitions_ahead: Annotated[int, Field(ge=0, le=1000)] = 2
    standbys: Annotated[int, Field(ge=0, le=100)] = 0
    replay_lag_s: Seconds = 30.0
    failover_clear_s: Seconds = 300.0
    mention_roles: str = ""
    health_file: str = ""
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        # An empty webhook file means "no webhook", as an empty DISCORD_WEBHOOK_URL does:
        # the compose stack's init writes one when no webhook is configured.
        settings = load_settings(cls, environ, env_name, secret_files=_SECRET_FILES, optional={"discord_webhook_url"})
        settings.check()
        return settings

    def check(self) -> None:
        """Validate the lists and URLs; raise ConfigError (never echoing a secret)."""
        for worker in self.expected_workers:
            if not _CLIENT_ID.match(worker):
                raise ConfigError("WATCHDOG_BRIDGE_WORKERS", f"{worker!r} is not a bridge client id (A-Za-z0-9_.-)")
        for name in self.expected_site_bridges:
            if not _CLIENT_ID.match(name):
                raise ConfigError("WATCHDOG_SITE_BRIDGES", f"{name!r} is not a bridge's remote_clientid (A-Za-z0-9_.-)")
        for role in self.mention_role_ids:
            if not _ROLE_ID.match(role):
                raise ConfigError("WATCHDOG_MENTION_ROLES", f"{role!r} is not a Discord role id (digits)")
        if self.data_loss_clear_s < self.failure_threshold * self.interval_s:
            raise ConfigError(
                "WATCHDOG_DATA_LOSS_CLEAR_S",
                f"must be at least WATCHDOG_FAILURE_THRESHOLD x WATCHDOG_INTERVAL_S "
                f"({self.failure_threshold * self.interval_s:g} s), or a single loss could never be alerted",
            )
        self.check_connections()
        if self.discord_webhook_url is not None:
            variable = "DISCORD_WEBHOOK_URL_FILE" if self.discord_webhook_url_file else "DISCORD_WEBHOOK_URL"
            check_webhook_url(self.discord_webhook_url.get_secret_value(), variable)

    @property
    def expected_workers(self) -> tuple[str, ...]:
        """Bridge client ids that must each be alive (WATCHDOG_BRIDGE_WORKERS)."""
        return _split(self.bridge_workers)

    @property
    def expected_site_bridges(self) -> tuple[str, ...]:
        """Site brokers' bridges (their remote_clientid) that must be connected (WATCHDOG_SITE_BRIDGES)."""
        return _split(self.site_bridges)

    @property
    def mention_role_ids(self) -> tuple[str, ...]:
        """Discord role ids an alert may ping (WATCHDOG_MENTION_ROLES)."""
        return _split(self.mention_roles)

    @property
    def health_path(self) -> str:
        """Where the watchdog records each cycle for the `health` command."""
        return self.health_file or f"/tmp/iot-watchdog-{self.client_id}.health"

    @property
    def health_max_age_s(self) -> float:
        """How old the health file may be: three intervals, plus one cycle's broker and database timeouts.

        With a reader of its own (DATABASE_READ_URL) a cycle probes two databases, one after the other.
        """
        probes = 2 if self.has_reader else 1
        return 3 * self.interval_s + self.broker_timeout_s + probes * self.database_timeout_s


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field."""
    return _UNPREFIXED.get(field, f"WATCHDOG_{field.upper()}")


def check_webhook_url(url: str, variable: str = "DISCORD_WEBHOOK_URL") -> None:
    """Accept http(s)://host/...; raise ConfigError naming `variable`, never echoing the URL (it holds the token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(variable, "is malformed (expected https://discord.com/api/webhooks/…)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(variable, "is not an http(s) URL with a path (expected https://discord.com/api/webhooks/...)")


def _split(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())

