"""bridge.__main__: the command line (run, health, replay-rejected) before anything connects."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.__main__ import main
from bridge.stats import Stats
from iotcommon.health import write_health


@pytest.mark.parametrize(("argv", "exit_code"), [(["health"], 1), (["health", "--live"], 0)])
def test_the_health_command_live_option_skips_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
    exit_code: int,
) -> None:
    path = tmp_path / "w1.health"
    beat = Stats(mqtt_connected=False).heartbeat(client_id="w1", at=datetime.now(UTC))
    write_health(str(path), beat.model_dump(mode="json"))
    monkeypatch.setenv("BRIDGE_HEALTH_FILE", str(path))

    assert main(argv) == exit_code
    assert ("alive" if exit_code == 0 else "not connected") in capsys.readouterr().out


def test_unknown_options_of_other_commands_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["health", "--dry-run"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --dry-run" in capsys.readouterr().err



# Runs in a child process: with the bug, the child hangs (and is killed), the suite does not.
SIGTERM_UNDER_THE_INBOX_LOCK = """
import os, signal, threading, time
from types import SimpleNamespace
from bridge.__main__ import install_signal_handlers
from bridge.inbox import Inbox

class Consumer:
    accepting = True
    def stop_accepting(self):
        self.accepting = False

inbox, consumer, stop, since = Inbox(limit=10), Consumer(), threading.Event(), []
install_signal_handlers(stop, SimpleNamespace(inbox=inbox, consumer=consumer), since)
with inbox._lock:  # where the idle writer spends its time: inside Inbox.take()
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
print(stop.is_set(), consumer.accepting, len(since))
"""


def test_sigterm_while_the_writer_holds_the_inbox_lock_stops_the_worker() -> None:
    # A worker sent SIGTERM while idle used to hang until SIGKILL: the handler ran on
    # the writer's thread inside Inbox.take() and waited for the lock that thread held.
    child = subprocess.run([sys.executable, "-c", SIGTERM_UNDER_THE_INBOX_LOCK], capture_output=True, text=True,
                           timeout=30, check=False)
    assert (child.returncode, child.stdout.split()) == (0, ["True", "False", "1"]), child.stderr
