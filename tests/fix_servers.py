"""Fixtures: real servers and bridge workers for the integration and fault tests (a pytest plugin).

Each server comes from the first backend that is available:

1. an existing server named by TEST_DATABASE_URL / TEST_MQTT_URL (each independently);
2. a throwaway server started from local binaries (Debian's `postgresql` and
   `mosquitto` packages) in a temporary folder, on a free port on 127.0.0.1;
3. a container, when a Docker engine is reachable (testcontainers);

otherwise the tests fail with a message naming what to install. Only backend 2
can stop and restart a server; tests that need that use `restartable_postgres`
or `restartable_mosquitto`, which skip on the other backends. CI always uses 2.

Fixtures chain server -> URL -> worker environment, as in arq's tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from devstack import urls
from devstack.mosquitto import MOSQUITTO_HINT, TEST_MQTT_PASSWORD, TEST_MQTT_USER, MosquittoServer, write_test_accounts
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import (
    BRIDGE_TEST_ROLE,
    BRIDGE_UPDATE_TEST_ROLE,
    POSTGRES_HINT,
    READER_TEST_ROLE,
    REPLAY_TEST_ROLE,
    PostgresServer,
    apply_schema,
)
from devstack.processes import REPO_ROOT, find_binary
from devstack.urls import login_url
from devstack.workers import MakeEnv, NotOnline, StartWorker, WorkerProcess, start_online, worker_env

WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 10.0
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _test_failed(item: pytest.Item) -> bool:
    """Whether the setup or call phase of `item` failed."""
    return any(report.failed for report in item.stash.get(_REPORTS, {}).values())


def _docker_available() -> bool:
    """Whether a Docker engine answers a ping."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        return bool(docker.from_env().ping())
    except (DockerException, OSError):  # requests' errors are OSErrors
        return False


def _no_backend(what: str, local_error: RuntimeError) -> str:
    """The failure message when no backend can provide `what`."""
    return (
        f"No {what} for the integration tests: {local_error}; "
        "a reachable Docker engine would also do."
    )


@pytest.fixture(scope="session")
def _postgres_backend() -> Iterator[tuple[str, PostgresServer | None]]:
    """(superuser URL, server we control or None) from the first available backend."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external, None
        return
    try:
        find_binary("initdb", POSTGRES_HINT)
    except RuntimeError as exc:
        if not _docker_available():
            pytest.fail(_no_backend("PostgreSQL", exc))
        with _postgres_container() as container:
            yield container.get_connection_url(), None
        return
    server = PostgresServer()
    try:
        server.start()
        yield server.url(), server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def _mosquitto_backend() -> Iterator[tuple[str, MosquittoServer | None]]:
    """(mqtt:// URL, broker we control or None) from the first available backend."""
    external = os.environ.get("TEST_MQTT_URL")
    if external:
        yield external, None
        return
    try:
        find_binary("mosquitto", MOSQUITTO_HINT)
    except RuntimeError as exc:
        if not _docker_available():
            pytest.fail(_no_backend("Mosquitto", exc))
        with tempfile.TemporaryDirectory() as tmp, _mosquitto_container(Path(tmp)) as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(1883)
            yield urls.mqtt_url(int(port), TEST_MQTT_USER, TEST_MQTT_PASSWORD, host=host), None
        return
    server = MosquittoServer()
    try:
        server.start()
        yield server.url, server
    finally:
        server.cleanup()


@contextlib.contextmanager
def _postgres_container() -> Iterator[Any]:
    """A PostgreSQL 16 container (testcontainers), stopped on exit."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the `community` namespace
        from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16", driver=None) as container:
        yield container


@contextlib.contextmanager
def _mosquitto_container(tmp: Path) -> Iterator[Any]:
    """eclipse-mosquitto (docker-compose.yml's version) with the project's config and test accounts, stopped on exit.

    Not exercised on the CI machines (no Docker engine there): the local
    binaries serve. The config's plugin paths are this image's own.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    write_test_accounts(tmp / "dynamic-security.json")
    os.chmod(tmp, 0o777)  # the image's broker runs as uid 1883 and saves the file
    container = (
        DockerContainer("eclipse-mosquitto:2.0.20")  # the image docker-compose.yml pins
        .with_exposed_ports(1883)
        .with_volume_mapping(str(REPO_ROOT / "mosquitto" / "mosquitto.conf"), "/mosquitto/config/mosquitto.conf")
        .with_volume_mapping(str(tmp), "/mosquitto/dynsec", mode="rw")
    )
    container.start()
    try:
        wait_for_logs(container, r"mosquitto version .* running", timeout=30)
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="session")
def postgres_server(_postgres_backend: tuple[str, PostgresServer | None]) -> PostgresServer | None:
    """The throwaway PostgreSQL, or None when an external server or a container serves."""
    return _postgres_backend[1]


@pytest.fixture(scope="session")
def mosquitto_server(
    _mosquitto_backend: tuple[str, MosquittoServer | None],
) -> MosquittoServer | None:
    """The throwaway Mosquitto, or None when an external broker or a container serves."""
    return _mosquitto_backend[1]


@pytest.fixture(scope="session")
def admin_database_url(_postgres_backend: tuple[str, PostgresServer | None]) -> str:
    """Superuser URL of the test database, with schema.sql applied (once per session)."""
    url = _postgres_backend[0]
    apply_schema(url)
    return url


@pytest.fixture(scope="session")
def bridge_database_url(admin_database_url: str) -> str:
    """URL for the `bridge_test` role, which has only the bridge's privileges (iot_bridge)."""
    parts = urlsplit(admin_database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        pytest.fail(
            "TEST_DATABASE_URL must be a postgresql://user@host:port/dbname URL, "
            f"got {admin_database_url!r}"
        )
    return login_url(admin_database_url, BRIDGE_TEST_ROLE)


@pytest.fixture(scope="session")
def bridge_update_database_url(admin_database_url: str) -> str:
    """URL for the `bridge_update_test` role: the privileges of BRIDGE_ON_CONFLICT=update (iot_bridge_update)."""
    return login_url(admin_database_url, BRIDGE_UPDATE_TEST_ROLE)


@pytest.fixture(scope="session")
def reader_database_url(admin_database_url: str) -> str:
    """URL for the `reader_test` role, which may only read (iot_reader): the dashboards' role."""
    return login_url(admin_database_url, READER_TEST_ROLE)


@pytest.fixture(scope="session")
def replay_database_url(admin_database_url: str) -> str:
    """URL for the `replay_test` role, which has only replay-rejected's privileges (iot_replay)."""
    return login_url(admin_database_url, REPLAY_TEST_ROLE)


@pytest.fixture(scope="session")
def mqtt_url(_mosquitto_backend: tuple[str, MosquittoServer | None]) -> str:
    """mqtt://user:password@host:port of the test broker, as the test account allowed everything."""
    return _mosquitto_backend[0]


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> None:
    """Start every integration test with empty tables."""
    if request.node.get_closest_marker("integration") is None:
        return
    admin_url: str = request.getfixturevalue("admin_database_url")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, reading_revisions, rejected_messages, rejected_replays RESTART IDENTITY")


@pytest.fixture
def restartable_postgres(postgres_server: PostgresServer | None) -> Iterator[PostgresServer]:
    """The throwaway PostgreSQL for tests that stop it; skips on other backends.

    Starts the server again afterwards if the test left it stopped.
    """
    if postgres_server is None:
        pytest.skip("stopping PostgreSQL needs local binaries, not TEST_DATABASE_URL or Docker")
    yield postgres_server
    if not postgres_server.is_running():
        postgres_server.start()


@pytest.fixture
def restartable_mosquitto(mosquitto_server: MosquittoServer | None) -> Iterator[MosquittoServer]:
    """The throwaway Mosquitto for tests that stop it; skips on other backends.

    Starts the broker again afterwards if the test left it stopped.
    """
    if mosquitto_server is None:
        pytest.skip("stopping Mosquitto needs local binaries, not TEST_MQTT_URL or Docker")
    yield mosquitto_server
    if not mosquitto_server.is_running():
        mosquitto_server.start()


@pytest.fixture
def mqtt_client(mqtt_url: str) -> Iterator[MqttTestClient]:
    """A connected MQTT v5 test client (clean session, random client id)."""
    with MqttTestClient.from_url(mqtt_url) as client:
        yield client


@pytest.fixture
def share_group() -> str:
    """A shared-subscription group name unique to this test (the same for all its workers)."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def bridge_env(
    bridge_database_url: str, mqtt_url: str, share_group: str, tmp_path: Path
) -> MakeEnv:
    """A function building one worker's environment: make_env(client_id, **overrides).

    Override keys are upper-cased: make_env("w1", bridge_batch_size=10) sets BRIDGE_BATCH_SIZE.
    """

    def make_env(client_id: str, /, **overrides: object) -> dict[str, str]:
        env = worker_env(
            client_id, database_url=bridge_database_url, mqtt_url=mqtt_url, share_group=share_group,
            health_dir=tmp_path, bridge_heartbeat_s=1, bridge_log_level="INFO",
        )
        # Applied here, not passed on to worker_env: an override of database_url,
        # mqtt_url or share_group would clash with worker_env's own parameters.
        return {**env, **{key.upper(): str(value) for key, value in overrides.items()}}

    return make_env


def passwords_in(env: Mapping[str, str]) -> set[str]:
    """Every password a worker's environment gives it, as written and as the worker uses it."""
    found: set[str] = set()
    for key, value in env.items():
        if key.endswith("_URL"):
            password = urlsplit(value).password
            found |= {password, unquote(password)} if password else set()
        elif key.endswith("_PASSWORD"):
            found.add(value)
        elif key.endswith("_PASSWORD_FILE") and Path(value).is_file():
            found.add(Path(value).read_text(encoding="utf-8").strip())
    return {password for password in found if password}


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, bridge_env: MakeEnv, mqtt_url: str, tmp_path: Path
) -> Iterator[StartWorker]:
    """A function starting a bridge worker: start(client_id, *, ready=True, **env_overrides).

    With ready=True it returns once the worker published the retained `online`
    on bridge/status/<client_id>, which the bridge does only after its SUBACK.
    Every worker still running at teardown gets SIGTERM, then SIGKILL after
    10 s; when the test failed, their log tails are printed.
    """
    workers: list[WorkerProcess] = []
    secrets: set[str] = set()

    def start(client_id: str, /, *, ready: bool = True, **env_overrides: object) -> WorkerProcess:
        env = bridge_env(client_id, **env_overrides)
        secrets.update(passwords_in(env))
        worker = WorkerProcess(client_id, env, log_dir=tmp_path)
        workers.append(worker)
        if not ready:
            worker.start()
            return worker
        try:
            start_online([worker], mqtt_url, timeout_s=WORKER_READY_TIMEOUT_S)
        except NotOnline as exc:
            pytest.fail(str(exc))
        return worker

    yield start

    for worker in workers:
        if worker.is_running():
            worker.terminate(WORKER_STOP_TIMEOUT_S)
    for worker in workers:
        log = worker.log_text()
        leaked = [secret for secret in secrets if secret in log]
        assert not leaked, f"worker {worker.client_id} wrote a password into its log"
    if _test_failed(request.node):
        for worker in workers:
            print(f"\n--- worker {worker.client_id} (exit code {worker.wait(0)}) log tail ---")
            print(worker.log_tail(80))


@pytest.fixture
def start(start_worker: StartWorker, share_group: str) -> StartWorker:
    """start_worker with client ids unique to this test.

    Worker sessions outlive a test in the broker, subscriptions included: a
    reused id would still receive the share group of an earlier test.
    """

    def start_unique(client_id: str, /, *, ready: bool = True, **env_overrides: object) -> WorkerProcess:
        return start_worker(f"{client_id}-{share_group}", ready=ready, **env_overrides)

    return start_unique
