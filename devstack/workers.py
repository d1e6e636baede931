"""Bridge worker processes (`python -m bridge`) for the integration tests and benchmarks."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from devstack.mqtt_client import MqttTestClient
from devstack.processes import REPO_ROOT, wait_until
from devstack.programs import ProgramProcess
from iotcommon.contract import Heartbeat, MalformedHeartbeat, WorkerStatus, parse_heartbeat, status_topic


class MakeEnv(Protocol):
    """Type of the `bridge_env` fixture: the environment for one bridge worker."""

    def __call__(self, client_id: str, /, **overrides: object) -> dict[str, str]: ...


class StartWorker(Protocol):
    """Type of the `start_worker` fixture: start a bridge worker and wait until it is ready."""

    def __call__(
        self, client_id: str, /, *, ready: bool = True, **env_overrides: object
    ) -> WorkerProcess: ...



class WorkerProcess(ProgramProcess):
    """One `python -m bridge` worker, run from the repository root, logging to a file.

    Its health file is BRIDGE_HEALTH_FILE of `env` (worker_env sets one),
    else one in the log folder.
    """

    def __init__(
        self, client_id: str, env: Mapping[str, str], *, log_dir: Path | None = None, source: Path = REPO_ROOT
    ) -> None:
        self._client_id = client_id
        folder = log_dir or Path(tempfile.mkdtemp(prefix="bridge-test-worker-"))
        self._health_path = Path(env.get("BRIDGE_HEALTH_FILE") or folder / f"health-{client_id}")
        super().__init__("bridge", {**env, "BRIDGE_HEALTH_FILE": str(self._health_path)},
                         name=f"worker {client_id}", log_path=folder / f"worker-{client_id}.log", source=source)

    @property
    def client_id(self) -> str:
        """The worker's MQTT client id (BRIDGE_CLIENT_ID)."""
        return self._client_id

    @property
    def health_path(self) -> Path:
        """The worker's health file: its latest heartbeat (the last one written as it stopped)."""
        return self._health_path

    def heartbeat(self) -> Heartbeat:
        """The heartbeat in the worker's health file; AssertionError if there is none or it is not the contract's.

        After a stop it holds the worker's final counters: a worker's last beat
        follows its drain (bridge/__main__.py), and a restart overwrites it.
        """
        try:
            beat = parse_heartbeat(self._health_path.read_bytes())
        except (OSError, MalformedHeartbeat) as exc:
            raise AssertionError(f"no heartbeat of {self._client_id} in {self._health_path}: {exc}\n"
                                 f"{self.log_tail()}") from None
        if beat is None:
            raise AssertionError(f"the health file of {self._client_id} is empty: {self._health_path}")
        return beat


class Member(Protocol):
    """A process that joins the share group and publishes its retained `online` status once subscribed."""

    @property
    def client_id(self) -> str: ...

    def start(self) -> None: ...

    def is_running(self) -> bool: ...

    def log_tail(self, lines: int = ...) -> str: ...


def worker_env(
    client_id: str, *, database_url: str, mqtt_url: str, share_group: str, health_dir: Path, **overrides: object
) -> dict[str, str]:
    """One bridge worker's environment; override keys are upper-cased (bridge_batch_size= sets BRIDGE_BATCH_SIZE)."""
    env = {
        "DATABASE_URL": database_url,
        "MQTT_URL": mqtt_url,
        "BRIDGE_CLIENT_ID": client_id,
        "BRIDGE_SHARE_GROUP": share_group,
        "BRIDGE_HEALTH_FILE": str(health_dir / f"health-{client_id}"),
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


class NotOnline(RuntimeError):
    """A worker exited, or stayed silent, before it published `online`."""


def start_online(members: Sequence[Member], mqtt_url: str, *, timeout_s: float = 30.0) -> None:
    """Start the members and wait for each one's retained `online` (published after its SUBACK).

    The retained status of an earlier process with the same id is cleared
    first, and the subscription made before the start, so an `online` cannot
    be missed or mistaken for an old one. Raises NotOnline with the log tail.
    """
    topics = {member.client_id: status_topic(member.client_id) for member in members}
    with MqttTestClient.from_url(mqtt_url) as status:
        for topic in topics.values():
            status.publish(topic, b"", retain=True)
            status.subscribe(topic)
        for member in members:
            member.start()

        def online() -> bool:
            for member in members:
                if not member.is_running():
                    raise NotOnline(f"{member.client_id} exited before it was online; log tail:\n{member.log_tail()}")
            seen = {m.topic for m in status.received() if m.payload == WorkerStatus.ONLINE.encode()}
            return all(topic in seen for topic in topics.values())

        try:
            wait_until(online, timeout_s, message="every worker online")
        except AssertionError as exc:
            tails = "\n".join(f"--- {m.client_id} ---\n{m.log_tail()}" for m in members)
            raise NotOnline(f"{exc}\n{tails}") from None
