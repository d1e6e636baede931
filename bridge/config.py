"""Bridge settings: read once from the environment, validated, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import AwareDatetime, Field

from bridge.model import MIN_TIMESTAMP, Limits
from bridge.revisions import OnConflict
from iotcommon.contract import READINGS_FILTER
from iotcommon.errors import ConfigError
from iotcommon.settings import CONNECTION_VARIABLES, Connections, load_settings


class Settings(Connections):
    """Everything a bridge worker can be told; see the README's configuration table."""

    client_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "bridge-1"
    share_group: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/+#]+$")] = "bridge"
    topic: Annotated[str, Field(min_length=1, max_length=256)] = READINGS_FILTER
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    flush_ms: Annotated[int, Field(ge=1, le=60_000)] = 50
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
        settings = load_settings(cls, environ, env_name)
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
        return f"$share/{self.share_group}/{self.topic}"

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
