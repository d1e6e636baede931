"""Settings of `python -m bridge partition`: the partitions of readings and the retention of every growing table.

Read once from the environment (README, "Partitioning"), like a worker's:
the command connects as the database owner (DATABASE_URL), since it creates
an extension and tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import AwareDatetime, Field, SecretStr

from bridge.model import MIN_TIMESTAMP
from iotcommon.settings import CONNECTION_VARIABLES, Connections, load_settings

# A PostgreSQL interval of whole hours, days, weeks or months: shorter partitions would be
# thousands of tables a year, and each needs a lock in every query that is not pruned.
INTERVAL = r"^[1-9][0-9]{0,3} (hour|day|week|month)s?$"
# A retention: the same form, or `none` to keep everything.
RETENTION = r"^(none|[1-9][0-9]{0,4} (hour|day|week|month|year)s?)$"
KEEP_ALL = "none"

_NAMES = {**CONNECTION_VARIABLES, "min_timestamp": "BRIDGE_MIN_TIMESTAMP"}


class PartitionSettings(Connections):
    """What `python -m bridge partition` is told; see the README's Partitioning table."""

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/sensors")
    interval: Annotated[str, Field(pattern=INTERVAL)] = "1 day"
    premake: Annotated[int, Field(ge=2, le=366)] = 7
    retention: Annotated[str, Field(pattern=RETENTION)] = "365 days"
    revisions_retention: Annotated[str, Field(pattern=RETENTION)] = "365 days"
    rejected_retention: Annotated[str, Field(pattern=RETENTION)] = "90 days"
    lock_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The workers' floor (BRIDGE_MIN_TIMESTAMP): a conversion moves rows older than it to the dead letters.
    min_timestamp: AwareDatetime = MIN_TIMESTAMP

    @staticmethod
    def kept(retention: str) -> str | None:
        """A retention as PostgreSQL reads it, or None for `none` (keep everything)."""
        return None if retention == KEEP_ALL else retention

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PartitionSettings:
        """Build settings from an environment mapping; raise ConfigError naming the variable."""
        settings = load_settings(cls, environ, env_name)
        settings.check_connections()
        return settings


def env_name(field: str) -> str:
    """The environment variable that sets a PartitionSettings field."""
    return _NAMES.get(field, f"PARTITION_{field.upper()}")
