"""`python -m bridge partition` settings: defaults, validation naming the variable, the README's table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from readme_tables import readme_settings_table

from bridge.partition.settings import PartitionSettings, env_name
from iotcommon.errors import ConfigError

OWN = sorted(field for field in PartitionSettings.model_fields if env_name(field).startswith("PARTITION_"))


def test_defaults_partition_daily_a_week_ahead_and_keep_a_year() -> None:
    settings = PartitionSettings.from_env({})

    assert (settings.interval, settings.premake, settings.retention) == ("1 day", 7, "365 days")
    assert settings.min_timestamp == datetime(2020, 1, 1, tzinfo=UTC)  # the workers' floor, same variable
    assert env_name("min_timestamp") == "BRIDGE_MIN_TIMESTAMP"
    assert settings.conninfo() == "postgresql://postgres@127.0.0.1:5432/sensors"  # the owner, not the bridge


@pytest.mark.parametrize(("variable", "value"), [
    ("PARTITION_INTERVAL", "15 minutes"),  # shorter than an hour: thousands of partitions a year
    ("PARTITION_INTERVAL", "1 day; DROP TABLE readings"),
    ("PARTITION_RETENTION", "forever"),
    ("PARTITION_PREMAKE", "1"),
])
def test_bad_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PartitionSettings.from_env({variable: value})

    assert caught.value.variable == variable


def test_none_keeps_everything_and_blank_is_the_default() -> None:
    settings = PartitionSettings.from_env({"PARTITION_RETENTION": "none", "PARTITION_REJECTED_RETENTION": " "})

    assert settings.kept(settings.retention) is None
    assert settings.kept(settings.rejected_retention) == "90 days"  # blank is unset, as for every variable


def _table() -> dict[str, str]:
    return readme_settings_table("PARTITION_")


def test_readme_documents_exactly_the_settings() -> None:
    assert set(_table()) == {env_name(field) for field in OWN}


@pytest.mark.parametrize("field", OWN)
def test_readme_default_matches_settings(field: str) -> None:
    written = re.search(r"`([^`]*)`", _table()[env_name(field)])
    assert written, f"default of {env_name(field)} should be in backticks"
    parsed = PartitionSettings.model_validate({field: written.group(1)})
    assert getattr(parsed, field) == getattr(PartitionSettings(), field)
