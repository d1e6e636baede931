"""Bridge settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import AwareDatetime, Field

from bridge.model import MIN_TIMESTAMP, Limits
from bridge.store import OnConflict
from iotcommon.contract import READINGS_FILTER, shared_subscription
from iotcommon.errors import ConfigError
from iotcommon.settings import CONNECTION_VARIABLES, Connections, load_settings

# Variables that were renamed, still read under their former name so that an
# operator's existing .env keeps its meaning: former -> current.
RENAMED = {"BRIDGE_FLUSH_MS": "BRIDGE_LINGER_MS"}


class Settings(Connections):
    """Everything a bridge worker can be told; see the README's configuration table."""

    client_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "bridge-1"
    share_group: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/+#]+$")] = "bridge"
    topic: Annotated[str, Field(min_length=1, max_length=256)] = READINGS_FILTER
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    linger_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    max_in_flight: Annotated[int, Field(ge=1, le=65_535)] = 2000
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_295)] = 259_200
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    shutdown_grace_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_payload_bytes: Annotated[int, Field(ge=256, le=10_000_000)] = 65_536
    max_future_s: Annotated[int, Field(ge=0, le=31_536_000)] = 300
    min_timestamp: AwareDatetime = MIN_TIMESTAMP
    db_retry_max_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    statement_timeout_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 10_000
    commit_wait_warn_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    on_conflict: OnConflict = OnConflict.KEEP
    startup_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    health_file: str = ""
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        try:
            settings = load_settings(cls, current_names(environ), env_name)
        except ConfigError as exc:
            raise as_set(exc, environ) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Validate the cross-field rules and the connections; raise ConfigError."""
        if self.max_in_flight < self.batch_size:
            raise ConfigError(
                "BRIDGE_MAX_IN_FLIGHT",
                f"must be at least BRIDGE_BATCH_SIZE ({self.batch_size}), "
                "or batches could never fill",
            )
        self.check_connections()

    @property
    def limits(self) -> Limits:
        """The contract's configurable bounds, for validation (the workers and replay-rejected)."""
        return Limits(max_payload_bytes=self.max_payload_bytes, max_future_s=self.max_future_s,
                      min_timestamp=self.min_timestamp)

    @property
    def subscription(self) -> str:
        """The shared subscription every worker of the group uses."""
        return shared_subscription(self.share_group, self.topic)

    @property
    def health_path(self) -> str:
        """Where the worker records its health for the `health` command."""
        return self.health_file or f"/tmp/iot-bridge-{self.client_id}.health"

    @property
    def health_max_age_s(self) -> float:
        """How old the health file may be before the worker counts as unhealthy: three missed heartbeats."""
        return 3 * self.heartbeat_s


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field."""
    return CONNECTION_VARIABLES.get(field, f"BRIDGE_{field.upper()}")


def current_names(environ: Mapping[str, str]) -> Mapping[str, str]:
    """The environment with each renamed variable under its current name; ConfigError if both are set."""
    found = {former: current for former, current in RENAMED.items() if former in environ}
    for former, current in found.items():
        if current in environ:
            raise ConfigError(former, f"is the former name of {current}: set only {current}")
    return {**environ, **{current: environ[former] for former, current in found.items()}} if found else environ


def as_set(error: ConfigError, environ: Mapping[str, str]) -> ConfigError:
    """The error naming the variable as the operator set it (a former name, if that is what was set)."""
    former = next((f for f, current in RENAMED.items() if current == error.variable and f in environ), None)
    return error if former is None else ConfigError(former, error.problem)


def former_names(environ: Mapping[str, str]) -> list[str]:
    """The renamed variables set under their former name, for a warning at start-up."""
    return [f"{former} (now {current})" for former, current in RENAMED.items() if former in environ]
