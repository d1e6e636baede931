"""The container files' structure: services, order, secrets, ports, health checks, the image.

No Docker engine runs on the CI machines, so this checks what Compose accepts
(Debian's docker-compose 1.29 runs `config` without an engine) and what the
stack relies on, without starting it.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bridge.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
BRIDGES = ("bridge-1", "bridge-2", "bridge-3")
APP_IMAGE = "iot-sensors-bridge:latest"
# The stack's own services, as `up` starts them (profiles aside).
ONE_SHOTS = ("init", "broker-sync", "migrate")
CLIENTS = (*BRIDGES, "watchdog")
STORE_MOUNT = "/secrets"  # the `secrets` volume, every secret: init's and broker-sync's
SECRETS_MOUNT = "/run/secrets"  # where a service mounts its own secrets-<service> volume
COMPOSE_V1_HINT = "install Debian's `docker-compose` package (apt-get install -y docker-compose)"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def depends_on(compose: dict[str, Any], name: str) -> dict[str, str]:
    """A service's dependencies: name -> condition."""
    return {dep: spec["condition"] for dep, spec in (services(compose)[name].get("depends_on") or {}).items()}


def environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (services(compose)[name].get("environment") or {}).items()}


def volumes(compose: dict[str, Any], name: str) -> list[str]:
    return [str(v) for v in services(compose)[name].get("volumes") or []]


# --- Compose accepts it, with no .env -----------------------------------------------------------


def compose_config(tmp_path: Path, dotenv: str) -> dict[str, Any]:
    """What Compose makes of docker-compose.yml with `dotenv` as the project's .env (docker-compose 1.29 config)."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail(f"docker-compose is missing: {COMPOSE_V1_HINT}")
    text = (ROOT / "docker-compose.yml").read_text()
    # Compose v1 knows no top-level `name:` (v2's way to fix the project name, which
    # the README's volume names rely on); give it the same name with -p instead.
    without_name, count = re.subn(r"^name: iot-sensors-bridge\n", "", text, flags=re.M)
    assert count == 1
    (tmp_path / "docker-compose.yml").write_text(without_name)
    (tmp_path / "test.env").write_text(dotenv)  # never the developer's own .env

    result = subprocess.run(
        [docker_compose, "--project-directory", str(ROOT), "--env-file", str(tmp_path / "test.env"),
         "-p", "iot-sensors-bridge", "-f", str(tmp_path / "docker-compose.yml"), "config"],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120, check=False,
    )

    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def published_port(entry: str | dict[str, Any]) -> str:
    """The host port of a `config` ports entry: "[address:]published:target[/tcp]" or the long form."""
    return str(entry["published"]) if isinstance(entry, dict) else entry.split(":")[-2]


def init_environment(config: dict[str, Any]) -> dict[str, str]:
    """init's environment as the container gets it (`config` writes a literal $ as $$)."""
    return {key: str(value).replace("$$", "$") for key, value in config["services"]["init"]["environment"].items()}


def test_compose_accepts_the_file_with_no_env_and_no_variables(tmp_path: Path) -> None:
    config = compose_config(tmp_path, "")

    published = {name: published_port(service["ports"][0]) for name, service in config["services"].items()
                 if service.get("ports")}
    assert published == {"mosquitto": "11883", "postgres": "15432", "prometheus": "9090", "grafana": "3000",
                         "site-mosquitto": "11884"}
    assert set(init_environment(config).values()) == {"", "bridge"}, "nothing to override: all generated"


def test_compose_accepts_the_old_releases_env_and_keeps_its_ports(tmp_path: Path, stack_init: ModuleType) -> None:
    # The release before the secrets volume asked for .env, from an example holding change-me
    # (git show a0b08da^:.env.example); an upgrade keeps that file.
    old_env = (ROOT / "tests/unit/old-release.env").read_text()

    config = compose_config(tmp_path, old_env)

    assert init_environment(config)["POSTGRES_PASSWORD"] == "change-me"  # init sorts it out: test_stack_init
    published = {name: published_port(service["ports"][0]) for name, service in config["services"].items()
                 if service.get("ports")}
    assert published == {"mosquitto": "1883", "postgres": "5432", "prometheus": "9090", "grafana": "3000",
                         "site-mosquitto": "11884"}, (
        "devices keep the port they know")


def test_a_dollar_in_a_single_quoted_password_reaches_the_service_unchanged(
    tmp_path: Path, stack_init: ModuleType
) -> None:
    # README: single-quote a value holding `$` in .env; Compose v2 expands $NAME in unquoted
    # and double-quoted values (docs.docker.com, "Environment file syntax").
    # A broker password must be long enough for dynsec's rule (docs/security.md).
    config = compose_config(tmp_path, "BRIDGE_DB_PASSWORD='pa$word$$x'\nMQTT_DEVICES='7:d$7-Long-Enough-For-Brokers'\n")
    environ = init_environment(config)
    assert environ["BRIDGE_DB_PASSWORD"] == "pa$word$$x"

    stack_init.apply(environ, secrets_folder=tmp_path / "s", shares_folder=tmp_path / "shares",
                     dynsec_folder=tmp_path / "d", database_folder=tmp_path / "db", iterations=10,
                     chown=lambda path, uid: None, report=lambda line: None)

    assert (tmp_path / "shares/bridge/bridge_db_password").read_text() == "pa$word$$x"
    assert (tmp_path / "s/mqtt_device_7_password").read_text() == "d$7-Long-Enough-For-Brokers"


def test_no_variable_is_required(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.findall(r"\$\{[A-Z_]+:?\?", text) == [], "a fresh clone must start with no .env"


# --- the services and the order of an `up` ------------------------------------------------------


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {
        *ONE_SHOTS, "mosquitto", "postgres", *CLIENTS, "simulator", "prometheus", "grafana", "site-mosquitto",
    }
    assert services(compose)["simulator"]["profiles"] == ["tools"]
    assert services(compose)["site-mosquitto"]["profiles"] == ["site"]
    assert services(compose)["postgres"]["image"] == services(compose)["migrate"]["image"] == "postgres:16"


def test_the_image_is_built_once_by_init(compose: dict[str, Any]) -> None:
    built = [name for name, service in services(compose).items() if "build" in service]
    assert built == ["init"]
    assert services(compose)["init"]["image"] == APP_IMAGE
    users = [name for name, service in services(compose).items() if service.get("image") == APP_IMAGE]
    assert set(users) == {"init", "broker-sync", *CLIENTS, "simulator"}
    for name in set(users) - {"init"}:
        # Never pulled (no registry has it); built by init, which all of them wait for.
        assert services(compose)[name]["pull_policy"] == "never", name
        assert "init" in ancestors(compose, name), name


def ancestors(compose: dict[str, Any], name: str) -> set[str]:
    """Every service that `name` waits for, directly or not."""
    found: set[str] = set()
    todo = list(depends_on(compose, name))
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo.extend(depends_on(compose, dep))
    return found


def test_init_then_servers_then_migration_then_clients(compose: dict[str, Any]) -> None:
    assert depends_on(compose, "init") == {}
    for server in ("mosquitto", "postgres"):
        assert depends_on(compose, server) == {"init": "service_completed_successfully"}
    assert depends_on(compose, "migrate") == {
        "init": "service_completed_successfully", "postgres": "service_healthy",
    }
    # Named, not only reached through mosquitto: a running broker's dependencies are not waited for.
    assert depends_on(compose, "broker-sync") == {
        "init": "service_completed_successfully", "mosquitto": "service_healthy",
    }
    for name in CLIENTS:
        assert depends_on(compose, name) == {
            "mosquitto": "service_healthy", "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
            # A worker recreated for a new BRIDGE_SHARE_GROUP subscribes after the broker's role follows.
            "broker-sync": "service_completed_successfully",
        }, name
        assert services(compose)[name]["restart"] == "unless-stopped"
    assert depends_on(compose, "simulator") == {"bridge-1": "service_healthy"}


def test_one_shots_run_on_every_up_and_never_restart(compose: dict[str, Any]) -> None:
    for name in ONE_SHOTS:
        service = services(compose)[name]
        assert service["restart"] == "no"
        assert service["healthcheck"] == {"disable": True}
        assert "profiles" not in service


def test_migration_applies_the_schema_and_the_roles_and_stops_at_an_error(compose: dict[str, Any]) -> None:
    migrate = services(compose)["migrate"]
    command = migrate["command"]
    assert command[0] == "psql" and "ON_ERROR_STOP=1" in command
    files = [command[i + 1] for i, arg in enumerate(command) if arg == "-f"]
    assert files == ["/migrate/schema.sql", "/migrate/roles.sql"]
    assert {"./schema.sql:/migrate/schema.sql:ro", "./deploy/postgres/roles.sql:/migrate/roles.sql:ro"} <= set(
        volumes(compose, "migrate"))
    assert environment(compose, "migrate")["PGPASSFILE"] == f"{SECRETS_MOUNT}/postgres.pgpass"
    assert f"secrets={SECRETS_MOUNT}" in command
    assert not any("docker-entrypoint-initdb.d" in v for v in volumes(compose, "postgres")), (
        "initdb scripts run only on an empty volume: the migration does that job on every up"
    )


def test_migration_grants_what_the_workers_mode_needs(compose: dict[str, Any]) -> None:
    command = services(compose)["migrate"]["command"]
    variables = [command[i + 1] for i, arg in enumerate(command) if arg == "-v"]
    bridge_mode = environment(compose, "bridge-1")["BRIDGE_ON_CONFLICT"]
    assert f"on_conflict={bridge_mode}" in variables, "roles.sql must see the workers' BRIDGE_ON_CONFLICT"


def test_the_roles_script_reads_the_secrets_init_gives_migrate(stack_init: ModuleType) -> None:
    roles = (ROOT / "deploy/postgres/roles.sql").read_text()
    read = set(re.findall(r"`cat :'secrets'/(\w+)`", roles))
    assert read == {"bridge_db_password", "watchdog_db_password", "reader_db_password"}
    assert read <= set(share(stack_init, "migrate").files)


# --- secrets: generated into a volume, read from files ------------------------------------------


def share(stack_init: ModuleType, service: str) -> Any:
    (found,) = [s for s in stack_init.files.SHARES if s.service == service]
    return found


def test_init_takes_only_overrides_from_env(compose: dict[str, Any], stack_init: ModuleType) -> None:
    env = environment(compose, "init")
    for key, value in env.items():
        default = "bridge" if key == "BRIDGE_SHARE_GROUP" else ""
        assert value == f"${{{key}:-{default}}}", f"init.{key} must be .env's {key}, empty when unset"
    assert {s.variable for s in stack_init.SECRETS if s.variable} | {"MQTT_DEVICES"} <= set(env)
    assert services(compose)["init"]["user"] == "0:0"
    assert services(compose)["init"]["entrypoint"] == ["python", "/app/deploy/compose/stack_init.py"]
    assert services(compose)["broker-sync"]["entrypoint"] == services(compose)["init"]["entrypoint"]
    assert services(compose)["broker-sync"]["command"][0] == "sync-broker"
    assert "environment" not in services(compose)["broker-sync"], "it reads init's plan, not .env"
    assert set(volumes(compose, "init")) == {
        f"secrets:{STORE_MOUNT}", "mosquitto-dynsec:/mosquitto/dynsec", "postgres-data:/state/postgres-data:ro",
        *(f"secrets-{s.service}:/shares/{s.service}" for s in stack_init.files.SHARES),
    }


@pytest.mark.parametrize("name", ["mosquitto", "postgres", "migrate", *CLIENTS, "simulator", "prometheus", "grafana",
                                  "site-mosquitto"])
def test_no_password_in_the_environment_of_a_service(compose: dict[str, Any], name: str) -> None:
    for key, value in environment(compose, name).items():
        assert "${" not in value or "PASSWORD" not in value, f"{name}.{key} takes a password from .env"
        if key.endswith("_URL"):
            assert urlsplit(value).password is None, f"{name}.{key} carries a password"
        if "PASSWORD" in key:
            assert key.endswith(("_FILE", "PASSFILE")), f"{name}.{key} holds a password, not a file"


def own_volume(compose: dict[str, Any], name: str) -> str | None:
    """The secrets-<service> volume a service mounts read-only at /run/secrets, if any."""
    mounts = [v.split(":")[0] for v in volumes(compose, name) if v.split(":")[1:] == [SECRETS_MOUNT, "ro"]]
    assert len(mounts) <= 1, name
    return mounts[0] if mounts else None


def readable_secrets(compose: dict[str, Any], stack_init: ModuleType) -> dict[str, set[str]]:
    """Secret file name -> the services that can read it, from the compose file's mounts and init's SHARES."""
    readers: dict[str, set[str]] = {}
    for name in services(compose):
        if any(v.startswith(f"secrets:{STORE_MOUNT}") for v in volumes(compose, name)):
            for secret in stack_init.SECRETS:
                readers.setdefault(secret.name, set()).add(name)
        volume = own_volume(compose, name)
        if volume is not None:
            for file in share(stack_init, volume.removeprefix("secrets-")).files:
                readers.setdefault(file, set()).add(name)
    return readers


def test_each_service_can_read_its_own_secrets_and_no_other(compose: dict[str, Any], stack_init: ModuleType) -> None:
    one_shots = {"init", "broker-sync"}  # the store's readers: they write and apply every secret
    assert readable_secrets(compose, stack_init) == {
        "postgres_password": {*one_shots, "postgres"},
        "postgres.pgpass": {"migrate"},
        "bridge_db_password": {*one_shots, *BRIDGES, "migrate"},
        "watchdog_db_password": {*one_shots, "watchdog", "migrate"},
        "reader_db_password": {*one_shots, "simulator", "migrate", "grafana"},
        "mqtt_bridge_password": {*one_shots, *BRIDGES},
        "mqtt_watchdog_password": {*one_shots, "watchdog"},
        "mqtt_simulator_password": {*one_shots, "simulator"},
        "mqtt_admin_password": one_shots,
        "mqtt_health_password": one_shots,  # the broker's health check reads its own options file
        "grafana_admin_password": {*one_shots, "grafana"},
        "discord_webhook_url": {*one_shots, "watchdog"},
        "mqtt_site_bridge_password": {*one_shots, "site-mosquitto"},
    }


def test_every_secret_file_a_service_reads_is_in_its_own_volume(
    compose: dict[str, Any], stack_init: ModuleType
) -> None:
    readers = 0
    for name in services(compose):
        for key, value in environment(compose, name).items():
            if value.startswith(f"{SECRETS_MOUNT}/"):
                readers += 1
                volume = own_volume(compose, name)
                assert volume is not None, f"{name}.{key}: {name} mounts no secrets volume"
                assert value.removeprefix(f"{SECRETS_MOUNT}/") in share(stack_init, volume.removeprefix(
                    "secrets-")).files, f"{name}.{key}"
    assert readers >= 12


def test_each_client_reads_its_own_accounts(compose: dict[str, Any]) -> None:
    for name, user in [*((b, "bridge") for b in BRIDGES), ("watchdog", "watchdog"), ("simulator", "simulator")]:
        env = environment(compose, name)
        assert urlsplit(env["MQTT_URL"]).username == user
        assert env["MQTT_PASSWORD_FILE"] == f"{SECRETS_MOUNT}/mqtt_{user}_password"
        database_user = "reader" if user == "simulator" else user
        assert urlsplit(env["DATABASE_URL"]).username == database_user
        assert env["DATABASE_PASSWORD_FILE"] == f"{SECRETS_MOUNT}/{database_user}_db_password"


def test_only_init_writes_the_secrets_volumes(compose: dict[str, Any], stack_init: ModuleType) -> None:
    names = {"secrets", *(f"secrets-{s.service}" for s in stack_init.files.SHARES)}
    assert names <= set(compose["volumes"])
    for name in services(compose):
        for volume in volumes(compose, name):
            source, _, *mode = volume.split(":")
            if source in names and name not in ("init", "broker-sync"):
                assert mode == ["ro"], f"{name}: {volume}"
    # broker-sync writes only its plan back (pending accounts done): see deploy/compose/broker_sync.py.
    assert volumes(compose, "broker-sync") == [f"secrets:{STORE_MOUNT}"]


def test_every_volume_an_image_declares_is_named(compose: dict[str, Any]) -> None:
    # The VOLUME lines of the official images: an unnamed one becomes an anonymous volume per
    # container, lost at `down` and left behind by every recreation.
    declared = {"eclipse-mosquitto": ["/mosquitto/data", "/mosquitto/log"], "postgres": ["/var/lib/postgresql/data"],
                "prom/prometheus": ["/prometheus"]}
    for name, service in services(compose).items():
        for path in declared.get(service.get("image", "").split(":")[0], []):
            mounted = {v.split(":")[1] for v in volumes(compose, name)} | set(service.get("tmpfs", []))
            assert path in mounted, f"{name} leaves {path} to an anonymous volume"
    assert "prometheus-data:/prometheus" in volumes(compose, "prometheus")
    assert "mosquitto-log:/mosquitto/log" in volumes(compose, "mosquitto")


def test_env_example_is_optional_documentation(compose: dict[str, Any]) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assert all(not line.strip() or line.startswith("#") for line in lines), "every line commented out"
    documented = set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", "\n".join(lines), re.M))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)[:}?-]", (ROOT / "docker-compose.yml").read_text()))
    assert used == documented
    assert not re.search(r"^#? ?[A-Z_]*PASSWORD=change-me", "\n".join(lines), re.M)


def test_no_real_env_file_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert tracked.strip() == ""
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


# --- ports, the broker, health checks -----------------------------------------------------------


@pytest.mark.parametrize("name", ["postgres", "prometheus", "grafana"])
def test_servers_people_reach_are_published_on_localhost_only(compose: dict[str, Any], name: str) -> None:
    ports = services(compose)[name]["ports"]
    assert ports and all(str(port).startswith("127.0.0.1:") for port in ports), ports


def test_the_broker_is_published_for_devices(compose: dict[str, Any]) -> None:
    # Devices connect from the network: every interface, on purpose (the file says so).
    assert services(compose)["mosquitto"]["ports"] == ["${MQTT_PORT:-11883}:1883"]


def test_host_ports_are_settings_whose_defaults_avoid_the_usual_servers(compose: dict[str, Any]) -> None:
    # 1883: Debian's mosquitto (scripts/bootstrap installs it) listens there; 5432: any local PostgreSQL.
    published = {name: str(port) for name, service in services(compose).items() for port in service.get("ports", [])}
    defaults = {name: re.fullmatch(r"(?:127\.0\.0\.1:)?\$\{([A-Z_]+_PORT):-(\d+)\}:\d+", port) for name, port in
                published.items()}
    assert all(defaults.values()), published
    ports = {name: int(match[2]) for name, match in defaults.items() if match}
    assert ports == {"mosquitto": 11883, "postgres": 15432, "prometheus": 9090, "grafana": 3000,
                     "site-mosquitto": 11884}


def test_the_broker_image_is_a_pinned_release_with_the_fixes(compose: dict[str, Any]) -> None:
    image = services(compose)["mosquitto"]["image"]
    match = re.fullmatch(r"eclipse-mosquitto:2\.0\.(\d+)", image)
    assert match, f"{image}: pin a 2.0.x release (2 now resolves to the untested 2.1)"
    assert int(match[1]) >= 13, "Receive Maximum and shared subscriptions are fixed from 2.0.13 on"


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_stop_grace_periods_cover_each_shutdown(compose: dict[str, Any]) -> None:
    assert _seconds(services(compose)["mosquitto"]["stop_grace_period"]) >= 60  # saving large queues
    assert _seconds(services(compose)["postgres"]["stop_grace_period"]) >= 120  # the shutdown checkpoint
    for name in BRIDGES:
        assert _seconds(services(compose)[name]["stop_grace_period"]) > Settings().shutdown_grace_s


@pytest.mark.parametrize("name", ["mosquitto", "postgres", "watchdog"])
def test_long_running_services_have_health_checks(compose: dict[str, Any], name: str) -> None:
    check = services(compose)[name]["healthcheck"]
    assert check["test"] and not check.get("disable")


def test_postgres_is_healthy_only_when_it_accepts_tcp(compose: dict[str, Any]) -> None:
    test = services(compose)["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and re.search(r"\bpg_isready -h 127\.0\.0\.1\b", test[1])


def test_the_broker_health_check_has_no_password_on_its_command_line(
    compose: dict[str, Any], stack_init: ModuleType
) -> None:
    test = services(compose)["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert not re.search(r"(^|\s)(-P|--pw|-u|--username)\s|PASSWORD", test[1]), test[1]
    # The options come from the file init writes on the broker's accounts volume.
    match = re.match(r"XDG_CONFIG_HOME=(\S+) mosquitto_sub ", test[1])
    assert match and match[1] == f"/mosquitto/dynsec/{stack_init.HEALTH_FOLDER}"
    assert "mosquitto-dynsec:/mosquitto/dynsec" in volumes(compose, "mosquitto")
    assert "environment" not in services(compose)["mosquitto"]


def test_no_health_check_passes_a_secret(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        text = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
        assert "PASSWORD" not in text and " -P " not in text, name


# --- the workers, the watchdog, the simulator ---------------------------------------------------


def test_bridges_have_distinct_stable_client_ids(compose: dict[str, Any]) -> None:
    ids = [services(compose)[name]["environment"]["BRIDGE_CLIENT_ID"] for name in BRIDGES]
    assert ids == list(BRIDGES)


@pytest.mark.parametrize("name", BRIDGES)
def test_bridge_environment_names_are_settings(compose: dict[str, Any], name: str) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    assert set(services(compose)[name]["environment"]) <= known


def test_watchdog_and_simulator_environment_names_are_settings(compose: dict[str, Any]) -> None:
    from simulator.config import Settings as SimulatorSettings
    from simulator.config import env_name as simulator_env_name
    from watchdog.config import Settings as WatchdogSettings
    from watchdog.config import env_name as watchdog_env_name

    known = {watchdog_env_name(field) for field in WatchdogSettings.model_fields}
    assert set(services(compose)["watchdog"]["environment"]) <= known
    assert set(services(compose)["simulator"]["environment"]) <= {
        simulator_env_name(field) for field in SimulatorSettings.model_fields}


def test_the_simulator_writes_its_json_into_a_volume(compose: dict[str, Any]) -> None:
    simulator = services(compose)["simulator"]
    assert f"simulator-results:{simulator['working_dir']}" in volumes(compose, "simulator")
    assert "simulator-results" in compose["volumes"]


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
    assert environment(compose, "grafana") == {
        "GF_SECURITY_ADMIN_PASSWORD__FILE": f"{SECRETS_MOUNT}/grafana_admin_password",
        "READINGS_DATABASE_ADDRESS": "${DATABASE_READ_ADDRESS:-postgres:5432}",
    }


def test_observability_provisions_the_readings_dashboard_on_the_read_only_role(
    compose: dict[str, Any], stack_init: ModuleType
) -> None:
    dashboards = sorted(path.name for path in (ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert dashboards == ["iot-bridge.json", "iot-readings.json"], "both dashboards in the provisioned folder"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/iot.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes(compose, "grafana")
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/readings.yml").read_text())
    [source] = provisioned["datasources"]
    readings = json.loads((ROOT / "deploy/grafana/dashboards/iot-readings.json").read_text())
    assert {panel["datasource"]["uid"] for panel in readings["panels"]} == {source["uid"]}
    assert source["user"] == "reader" and source["jsonData"]["database"] == "sensors"
    assert source["url"] == "${READINGS_DATABASE_ADDRESS}", "Grafana expands it from its environment"
    password = source["secureJsonData"]["password"]
    assert password == f"$__file{{{SECRETS_MOUNT}/reader_db_password}}", "from Grafana's own secrets volume"
    assert "reader_db_password" in share(stack_init, "grafana").files
    assert f"secrets-grafana:{SECRETS_MOUNT}:ro" in volumes(compose, "grafana")
    # Grafana expands $NAME in what $__file{} read: init refuses a `$` in the password it reads
    # (test_stack_init.py, test_a_refused_value_names_the_variable_and_nothing_is_written).


def test_what_only_reads_reads_the_replica_named_in_env_else_the_primary(compose: dict[str, Any]) -> None:
    replica = "${DATABASE_READ_ADDRESS:-postgres:5432}"
    assert environment(compose, "grafana")["READINGS_DATABASE_ADDRESS"] == replica
    for name, role in (("watchdog", "watchdog"), ("simulator", "reader")):
        env = environment(compose, name)
        assert env["DATABASE_READ_URL"] == f"postgresql://{role}@{replica}/sensors"
        # Without .env, the very URL of DATABASE_URL: the programs then see no reader of their own.
        assert env["DATABASE_READ_URL"].replace(replica, "postgres:5432") == env["DATABASE_URL"]


# --- the image ----------------------------------------------------------------------------------


def test_the_base_image_is_an_exact_python_release_on_a_named_debian_release() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)$", dockerfile, re.M)
    assert match, "pin python:<major>.<minor>.<patch>-slim-<debian>, not a floating tag"
    assert (match[1], match[2]) == ("3", "11"), "the version the lock and the tests use"
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_has_a_health_check_a_non_root_user_and_a_build_stage() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*python\", \"-m\", \"bridge\", \"health\"", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.count("FROM ") >= 2
    assert "COPY --from=build" in dockerfile


def test_the_image_holds_the_init_program_and_its_user_is_the_secrets_owner(stack_init: ModuleType) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY deploy/compose deploy/compose$", dockerfile, re.M)
    assert re.search(rf"useradd .*--uid {stack_init.files.APP_UID}\b", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!deploy/compose" in ignored
    # Every script the init program loads is in that folder; the packages it imports are installed with the project.
    loaded = re.findall(r'load_module\("([^"]+)"\)', (ROOT / "deploy/compose/stack_init.py").read_text())
    assert {Path(path).parent.as_posix() for path in loaded} == {"deploy/compose"}
    needed = imported_packages("deploy/compose")
    assert "mosquitto" in needed  # the walk itself works: the init writes the broker's accounts (dynsec)
    assert needed <= copied_packages(), f"the image's build stage lacks COPY for {sorted(needed - copied_packages())}"


def local_imports(package: str) -> set[str]:
    """The project's top-level packages that `package`'s modules import."""
    local = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    found: set[str] = set()
    for module in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found & local


def imported_packages(*folders: str) -> set[str]:
    """The project's packages that the modules in `folders` import, and those they import in turn."""
    needed = set().union(*(local_imports(folder) for folder in folders))
    while more := set().union(*(local_imports(package) for package in needed)) - needed:
        needed |= more
    return needed


def build_stage() -> str:
    (build,) = [stage for stage in re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)
                if stage.startswith("${PYTHON_IMAGE} AS build")]
    return build


def copied_packages() -> set[str]:
    """The folders the build stage copies to a folder of the same name (then installed with the project)."""
    return set(re.findall(r"^COPY (\w+) \1$", build_stage(), re.M))


def test_the_image_holds_every_package_its_programs_import() -> None:
    # The programs import iotcommon; an image built without it fails at start with
    # ModuleNotFoundError, which no check here would see without a Docker engine.
    needed = {"bridge", "watchdog", "simulator"} | imported_packages("bridge", "watchdog", "simulator")
    assert "iotcommon" in needed  # the walk itself works
    copied = copied_packages()
    assert needed <= copied, f"the image's build stage lacks COPY for {sorted(needed - copied)}"
    assert "devstack" not in needed, "the programs must not need the development stack"

def test_dependencies_are_installed_from_the_lock_before_the_sources_are_copied() -> None:
    lines = build_stage().replace("\\\n", " ").splitlines()
    dependencies = next(i for i, line in enumerate(lines) if "pip install" in line and "-r requirements.txt" in line)
    assert lines[dependencies].rstrip().endswith("-r requirements.txt -c constraints.txt")
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    assert [lines[i] for i in copies if i < dependencies] == ["COPY setup.cfg constraints.txt ./"]
    project = next(i for i, line in enumerate(lines) if "pip install" in line and line.rstrip().endswith(" ."))
    assert "--no-deps" in lines[project] and project > max(copies)


def test_the_dependency_list_is_read_from_setup_cfg(tmp_path: Path) -> None:
    build = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    snippet = re.search(r'python -c "([^"]+)" > requirements\.txt', build)
    assert snippet
    (tmp_path / "setup.cfg").write_text((ROOT / "setup.cfg").read_text())
    printed = subprocess.run([sys.executable, "-c", snippet[1]], cwd=tmp_path, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "paho-mqtt>=2.1,<2.3" in printed and "pydantic>=2.5,<3" in printed and len(printed) >= 6


def test_the_image_user_owns_the_simulators_working_directory(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    folder = services(compose)["simulator"]["working_dir"]
    assert re.search(rf"install -d -o iot -g iot {re.escape(folder)}\b", dockerfile)


# --- the Kubernetes StatefulSet -----------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> tuple[dict[str, Any], dict[str, Any]]:
    statefulset, service = yaml.safe_load_all((ROOT / "deploy/k8s/bridge-statefulset.yaml").read_text())
    return statefulset, service


def container(k8s: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    (found,) = k8s[0]["spec"]["template"]["spec"]["containers"]
    return found  # type: ignore[no-any-return]


def _mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_k8s_image_is_a_registry_placeholder_to_replace(k8s: tuple[dict[str, Any], dict[str, Any]]) -> None:
    image = container(k8s)["image"]
    assert image != APP_IMAGE and not image.endswith(":latest")
    assert image.startswith("registry.example.com/"), "a placeholder nobody mistakes for a pullable image"
    assert "replace" in (ROOT / "deploy/k8s/bridge-statefulset.yaml").read_text()


def test_k8s_liveness_checks_only_the_worker_and_readiness_the_connection(
    k8s: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    bridge = container(k8s)
    assert bridge["livenessProbe"]["exec"]["command"] == ["python", "-m", "bridge", "health", "--live"]
    assert bridge["readinessProbe"]["exec"]["command"] == ["python", "-m", "bridge", "health"]


def test_k8s_pods_listen_on_the_metrics_port_they_publish(k8s: tuple[dict[str, Any], dict[str, Any]]) -> None:
    env = {item["name"]: item.get("value") for item in container(k8s)["env"]}
    (port,) = [p for p in container(k8s)["ports"] if p["name"] == "metrics"]
    assert int(env["BRIDGE_METRICS_PORT"]) == port["containerPort"] == k8s[1]["spec"]["ports"][0]["port"]


def test_k8s_memory_covers_a_worker_its_probes_and_a_full_inbox_of_large_messages(
    k8s: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    resources = container(k8s)["resources"]
    env = {item["name"]: item.get("value") for item in container(k8s)["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None and k.startswith("BRIDGE_")})
    mib = 1024 * 1024
    process = (55 + 2 * 30) * 1_000_000 / mib  # the worker and both probes at once
    assert _mebibytes(resources["requests"]["memory"]) >= process
    # Measured: about 115 KiB held per maximum-size (64 KiB) message waiting in the inbox.
    assert settings.max_payload_bytes <= 65_536
    inbox = settings.max_in_flight * 115 * 1024 / mib
    assert _mebibytes(resources["limits"]["memory"]) >= 1.25 * (inbox + process), "room above the worst case"


def test_k8s_passwords_come_from_a_mounted_secret(k8s: tuple[dict[str, Any], dict[str, Any]]) -> None:
    bridge, pod = container(k8s), k8s[0]["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in bridge["env"]}
    assert "envFrom" not in bridge
    assert set(env) <= {env_name(field) for field in Settings.model_fields}
    assert urlsplit(env["DATABASE_URL"]).password is None and urlsplit(env["MQTT_URL"]).password is None
    (mount,) = bridge["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True and volume["secret"]["secretName"]
    for variable in ("DATABASE_PASSWORD_FILE", "MQTT_PASSWORD_FILE"):
        assert Path(env[variable]).parent == Path(mount["mountPath"]), variable
    # The files must be readable by the non-root worker: group-readable, group = fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    assert volume["secret"]["defaultMode"] & 0o040


def test_the_site_broker_runs_site_conf_bridged_as_the_site_bridge_account(compose: dict[str, Any]) -> None:
    site = services(compose)["site-mosquitto"]
    assert site["image"] == services(compose)["mosquitto"]["image"]
    assert {"./mosquitto/site.conf:/site/site.conf:ro", "./mosquitto/site-start.sh:/site/start.sh:ro",
            "mosquitto-dynsec:/central-dynsec:ro", "site-mosquitto-data:/mosquitto/data"} <= set(volumes(compose,
                                                                                                 "site-mosquitto"))
    assert depends_on(compose, "site-mosquitto") == {
        "mosquitto": "service_healthy", "broker-sync": "service_completed_successfully"}
    start = (ROOT / "mosquitto" / "site-start.sh").read_text()
    assert "/run/secrets/mqtt_site_bridge_password" in start and 'ENVIRON["SITE_BRIDGE_PASSWORD"]' in start
    config = (ROOT / "mosquitto" / "site.conf").read_text()
    assert re.search(r"^address mosquitto:1883$", config, re.M), "the compose service of the central broker"
    assert re.search(r"^remote_password ", config, re.M) and re.search(r"^remote_clientid ", config, re.M)
    assert environment(compose, "watchdog")["WATCHDOG_SITE_BRIDGES"] == "${WATCHDOG_SITE_BRIDGES:-}"


def test_the_brokers_may_hold_a_fleet_of_connections(compose: dict[str, Any]) -> None:
    # Mosquitto keeps the open-files limit it is started with: one descriptor per client.
    for name in ("mosquitto", "site-mosquitto"):
        assert services(compose)[name]["ulimits"]["nofile"] >= 65536, name
