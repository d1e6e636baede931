"""Process plumbing shared by the test servers, workers and benchmarks: ports, polling, spawning."""

from __future__ import annotations

import functools
import os
import pwd
import re
import resource
import shutil
import signal as signals
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

T = TypeVar("T")

# Variables a program the tests start inherits from the test run; everything
# else (for example a DATABASE_URL in the developer's shell) is left out so
# only the test's settings apply. COV_CORE_/COVERAGE_ let pytest-cov measure it.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")
_INHERITED_PREFIXES = ("PYTHON", "COV_CORE_", "COVERAGE_")


def find_binary(name: str, hint: str) -> Path:
    """Return the path of executable `name` from PATH, PostgreSQL's bin folders or /usr/sbin."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    for folder in [*_postgres_bin_dirs(), Path("/usr/sbin")]:
        candidate = folder / name
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{name} not found: {hint}")


def _postgres_bin_dirs() -> list[Path]:
    """Debian's /usr/lib/postgresql/<version>/bin folders, newest version first."""

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)


def program_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """A minimal copy of os.environ with `overrides` applied: for the workers, watchdog and simulator we start."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _INHERITED_ENV or key.startswith(_INHERITED_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    A predicate may return None for "not yet": the result's type leaves None
    out, so callers need no check of their own. Raises AssertionError naming
    `message` and the last value at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout} s (last value: {value!r})")
        time.sleep(interval)




def wait_until_steady(measure: Callable[[], T], steady_s: float, timeout: float, message: str) -> T:
    """Poll `measure` until its value has not changed for `steady_s` seconds, and return that value.

    For "everything that will arrive has arrived" when the right count is not
    known in advance (what a broker kept, say).
    """
    last = measure()
    since = time.monotonic()

    def steady() -> bool:
        nonlocal last, since
        value = measure()
        if value != last:
            last, since = value, time.monotonic()
            return False
        return time.monotonic() - since >= steady_s

    wait_until(steady, timeout, interval=0.2, message=f"{message} (steady for {steady_s} s)")
    return last


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a live process from /proc/<pid>/status, in kB.

    VmRSS is its resident set now; VmHWM the peak resident set since it started.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def read_tail(path: Path, *, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file, or a note if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def service_account(name: str) -> pwd.struct_passwd | None:
    """The OS account to run a server as: `name` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root, but there is no `{name}` OS user to run the server as; "
            f"install Debian's `{name}` package or run the tests as a normal user"
        ) from None


def chown(account: pwd.struct_passwd | None, *paths: Path) -> None:
    """Give `paths` to `account`, so that a server that dropped root privileges can write them."""
    if account is not None:
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)


def spawn(
    args: list[str],
    *,
    log_path: Path,
    account: pwd.struct_passwd | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    open_files: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` in its own session with stdout and stderr appended to `log_path`.

    `open_files` sets its RLIMIT_NOFILE (a broker holding a fleet needs one descriptor per client):
    up to our own hard limit, which only CAP_SYS_RESOURCE may raise; RuntimeError above it.
    """
    limit = None
    if open_files is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and open_files > hard:
            raise RuntimeError(f"{args[0]} needs {open_files} open files, more than the hard limit {hard} "
                               "(ulimit -Hn); raise it where the process is started")
        limit = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (open_files, hard))
    with log_path.open("ab") as log:
        # A new session keeps a Ctrl-C in the terminal away from the servers;
        # the fixtures stop them in order.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
            preexec_fn=limit,  # noqa: PLW1509 - only setrlimit, before exec
        )


def stop_process(process: subprocess.Popen[bytes], sig: int, *, what: str) -> int:
    """Send `sig` and wait for the exit; SIGKILL and raise if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"{what} (pid {process.pid}) ignored signal {sig} for {STOP_TIMEOUT_S} s; killed it"
        ) from None


def wait_for_start(
    process: subprocess.Popen[bytes],
    is_ready: Callable[[], bool],
    *,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll `is_ready`; raise with the log tail if the process exits or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not is_ready():
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {process.returncode} while starting;"
                f" log tail:\n{log_tail()}"
            )
        if time.monotonic() >= deadline:
            stop_process(process, signals.SIGKILL, what=what)
            raise RuntimeError(
                f"{what} did not accept connections within {START_TIMEOUT_S} s;"
                f" log tail:\n{log_tail()}"
            )
        time.sleep(0.05)


