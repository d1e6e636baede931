"""deploy/compose/partitioned.yml: the compose stack's PostgreSQL with pg_partman and its background worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(path: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    return load("deploy/compose/partitioned.yml")


def test_postgres_runs_pg_partmans_worker_on_the_stacks_database_as_its_owner(
    base: dict[str, Any], override: dict[str, Any]
) -> None:
    command = override["services"]["postgres"]["command"]
    settings = dict(arg.split("=", 1) for arg in command if "=" in arg)
    environment = base["services"]["postgres"]["environment"]

    assert settings["shared_preload_libraries"] == "pg_partman_bgw"
    assert settings["pg_partman_bgw.dbname"] == environment["POSTGRES_DB"]
    assert settings["pg_partman_bgw.role"] == environment["POSTGRES_USER"]
    assert int(settings["pg_partman_bgw.interval"]) <= 3600


def test_the_image_adds_pg_partman_for_the_stacks_postgresql_major(base: dict[str, Any]) -> None:
    dockerfile = (ROOT / "deploy/postgres/Dockerfile").read_text()
    major = base["services"]["postgres"]["image"].split(":")[1]

    assert re.search(rf"^FROM postgres:{major}$", dockerfile, re.MULTILINE), "the same major: the volume stays usable"
    assert f"postgresql-{major}-partman=" in dockerfile, "pinned"


def test_setup_runs_after_the_migration_as_the_owner_and_maintenance_after_it(override: dict[str, Any]) -> None:
    services = override["services"]
    setup, maintenance = services["partition"], services["partition-maintenance"]

    assert setup["command"][-2:] == ["partition", "setup"]
    assert setup["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert setup["environment"]["DATABASE_URL"].startswith("postgresql://owner@postgres:5432/sensors")
    assert maintenance["command"][-4:] == ["partition", "maintain", "--every", "3600"]
    assert maintenance["depends_on"]["partition"]["condition"] == "service_completed_successfully"
