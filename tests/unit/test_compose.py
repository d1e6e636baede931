"""The container files' structure: services, health checks, dependencies, env names, secrets.

No Docker engine runs on the CI machines, so this checks what `docker compose
config` would accept and what the stack relies on, without starting it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
BRIDGES = ("bridge-1", "bridge-2", "bridge-3")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert {"mosquitto-init", "mosquitto", "postgres", *BRIDGES, "watchdog", "simulator"} <= set(services(compose))
    assert services(compose)["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services(compose)["postgres"]["image"] == "postgres:16"
    assert services(compose)["simulator"]["profiles"] == ["tools"]


@pytest.mark.parametrize("name", ["mosquitto", "postgres", "watchdog"])
def test_long_running_services_have_health_checks(compose: dict[str, Any], name: str) -> None:
    check = services(compose)[name]["healthcheck"]
    assert check["test"] and not check.get("disable")


def test_the_image_has_a_health_check_a_non_root_user_and_a_build_stage() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*python\", \"-m\", \"bridge\", \"health\"", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.count("FROM ") >= 2
    assert "COPY --from=build" in dockerfile


@pytest.mark.parametrize("name", BRIDGES)
def test_bridges_start_after_healthy_servers_and_restart(compose: dict[str, Any], name: str) -> None:
    bridge = services(compose)[name]
    assert bridge["depends_on"] == {
        "mosquitto": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"}
    }
    assert bridge["restart"] == "unless-stopped"


def test_bridges_have_distinct_stable_client_ids(compose: dict[str, Any]) -> None:
    ids = [services(compose)[name]["environment"]["BRIDGE_CLIENT_ID"] for name in BRIDGES]
    assert ids == list(BRIDGES)


@pytest.mark.parametrize("name", BRIDGES)
def test_bridge_environment_names_are_settings(compose: dict[str, Any], name: str) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    assert set(services(compose)[name]["environment"]) <= known


def test_every_required_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required and required <= set(example)
    assert all(example[name] == "change-me" for name in required if name.endswith("PASSWORD"))


def test_no_real_env_file_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert tracked.strip() == ""
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_secrets_come_from_the_environment_not_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "URL" in key:
                assert "${" in str(value), f"{name}.{key} must come from .env"


def test_observability_profile_scrapes_every_worker_and_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        assert services(compose)[name]["profiles"] == ["observability"]
        assert services(compose)[name]["healthcheck"]["test"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    ports = {name: services(compose)[name]["environment"]["BRIDGE_METRICS_PORT"] for name in BRIDGES}
    assert {f"{name}:{port}" for name, port in ports.items()} <= targets
    assert f"watchdog:{services(compose)['watchdog']['environment']['WATCHDOG_METRICS_PORT']}" in targets
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/iot-bridge.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in ("bridge_readings_stored_total", "bridge_rejected_by_code_total", "bridge_commit_seconds_bucket",
                   "bridge_in_flight", "bridge_database_up", "watchdog_component_up"):
        assert metric in exprs


def test_watchdog_and_simulator_environment_names_are_settings(compose: dict[str, Any]) -> None:
    from watchdog.config import Settings as WatchdogSettings
    from watchdog.config import env_name as watchdog_env_name

    known = {watchdog_env_name(field) for field in WatchdogSettings.model_fields}
    assert set(services(compose)["watchdog"]["environment"]) <= known
    assert set(services(compose)["simulator"]["environment"]) == {"MQTT_URL", "DATABASE_URL"}
