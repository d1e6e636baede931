"""iotcommon.health: health files written atomically and read back with their age (each program judges them)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import T0

from iotcommon.health import read_fresh_health, read_health, write_health


def test_write_health_replaces_the_file_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "w1.health"
    write_health(str(path), {"at": T0.isoformat(), "n": 1})
    write_health(str(path), {"at": (T0 + timedelta(seconds=5)).isoformat(), "n": 2})

    assert json.loads(path.read_text())["n"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["w1.health"]


def test_read_health_gives_the_snapshot_and_its_age(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, {"at": T0.isoformat(), "n": 1})

    assert read_health(path, now=T0 + timedelta(seconds=7)) == ({"at": T0.isoformat(), "n": 1}, 7.0)


@pytest.mark.parametrize("content", [None, "", "not json", "[]", '{"n": 1}', '{"at": "noon"}'])
def test_an_unusable_file_is_a_value_error_naming_it(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "w1.health"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ValueError, match=re.escape(f"no usable health file at {path}:")):
        read_health(str(path), now=T0)


def test_a_stale_file_says_what_was_last_recorded_and_by_whom(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.health")
    write_health(path, {"at": T0.isoformat()})

    _, age_s = read_fresh_health(path, now=T0 + timedelta(seconds=15), max_age_s=15, beat="heartbeat", who="worker")
    assert age_s == 15
    with pytest.raises(ValueError, match=r"last check cycle 16 s ago \(limit 15 s\): watchdog stuck or stopped"):
        read_fresh_health(path, now=T0 + timedelta(seconds=16), max_age_s=15, beat="check cycle", who="watchdog")
