"""Simulator settings: where the broker and the database are, read once from the environment.

The run itself (how many messages, how fast, --verify) is told on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from iotcommon.settings import READ_CONNECTION_VARIABLES, ReadConnections, load_settings


class Settings(ReadConnections):
    """The simulator's connections; see the README's Simulator section."""

    # --verify reads every table, which the bridge's role may not: the owner or a read-only role.
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/sensors")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        settings = load_settings(cls, environ, env_name)
        settings.check_connections()
        return settings


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field (all shared with the bridge or the watchdog)."""
    return READ_CONNECTION_VARIABLES[field]
