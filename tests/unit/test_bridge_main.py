"""bridge.__main__: the command line (run, health, replay-rejected) before anything connects."""

from __future__ import annotations

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
