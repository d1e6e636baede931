"""The life cycle every throwaway server shares: its folder, its port, start, stop, restart, cleanup.

A server (devstack/postgres.py, devstack/mosquitto.py, the standby of
devstack/replication.py, a site broker of devstack/site.py) says only how it
is launched and when it is ready; starting it, waiting for it, stopping it by
its PID and deleting its folder are done here, once.
"""

from __future__ import annotations

import pwd
import shutil
import signal as signals
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import LOCALHOST, free_port, spawn, stop_process, wait_for_start


@dataclass(frozen=True)
class Launch:
    """How a server's process is started: its command line, where its output goes, and as whom."""

    args: list[str]
    output: Path
    account: pwd.struct_passwd | None = None  # None: as ourselves
    cwd: Path | None = None
    open_files: int | None = None  # its RLIMIT_NOFILE, when it must hold more connections than the default


class ServerProcess(ABC):
    """A server on a free port (or `port`) on 127.0.0.1, its files in `root` (a temporary folder by default).

    The port and the folder stay across restarts, so a restarted server has
    its data back. Subclasses give `_launch()` and `_is_ready()`, and may
    prepare the folder on the first start (`_prepare()`).
    """

    name: str  # in error messages: "postgres", "mosquitto"
    stop_signal: int = signals.SIGTERM

    def __init__(self, root: Path | None, *, port: int | None, temp_prefix: str) -> None:
        self._root = root or Path(tempfile.mkdtemp(prefix=temp_prefix))
        self._root.mkdir(parents=True, exist_ok=True)
        self._port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return LOCALHOST

    @property
    def port(self) -> int:
        """TCP port the server listens on (the same across restarts)."""
        return self._port

    @property
    def pid(self) -> int:
        """PID of the server started last."""
        if self._process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._process.pid

    def is_running(self) -> bool:
        """Whether the server we started is still alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (its folder prepared first) and wait until it is ready; RuntimeError with its log if not."""
        if self.is_running():
            return
        self._prepare()
        launch = self._launch()
        self._process = spawn(launch.args, log_path=launch.output, account=launch.account, cwd=launch.cwd,
                              open_files=launch.open_files)
        wait_for_start(self._process, self._is_ready, what=self.name, log_tail=self.log_tail)

    def stop(self) -> None:
        """Stop the server with its usual signal and wait for it to exit."""
        self._stop_with(self.stop_signal)

    def restart(self) -> None:
        """Stop if running, then start on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    @abstractmethod
    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server logged."""

    def _stop_with(self, sig: int) -> None:
        """Send `sig` to the server we started, if any, and wait for it to exit."""
        if self._process is not None:
            stop_process(self._process, sig, what=self.name)

    def _prepare(self) -> None:  # noqa: B027 - a hook, not abstract: a broker needs nothing before its start
        """What a start needs first (PostgreSQL: initdb on the first one); nothing by default."""

    @abstractmethod
    def _launch(self) -> Launch:
        """The server's command line and how to run it."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """Whether the server answers as a client would use it, right now."""
