"""Health files: a program records its latest state atomically, and a health command reads it back.

Shared by the bridge (its heartbeat) and the watchdog (its last cycle); what
counts as healthy is each program's own judgement.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from typing import Any


def write_health(path: str, snapshot: dict[str, Any]) -> None:
    """Atomically replace the health file with the latest snapshot."""
    write_health_text(path, json.dumps(snapshot))


def write_health_text(path: str, text: str) -> None:
    """Atomically replace the health file with `text` (JSON)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".health-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_health(path: str, *, now: datetime) -> tuple[dict[str, Any], float]:
    """The snapshot and its age in seconds; ValueError naming the file if it is missing or unusable."""
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data, (now - datetime.fromisoformat(data["at"])).total_seconds()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"no usable health file at {path}: {exc}") from None


def read_fresh_health(
    path: str, *, now: datetime, max_age_s: float, beat: str, who: str
) -> tuple[dict[str, Any], float]:
    """The snapshot and its age, if written within max_age_s; ValueError saying why not (for a health command).

    `beat` names what is recorded ("heartbeat", "check cycle"), `who` the program ("worker", "watchdog").
    """
    data, age_s = read_health(path, now=now)
    if age_s > max_age_s:
        raise ValueError(f"last {beat} {age_s:.0f} s ago (limit {max_age_s:.0f} s): {who} stuck or stopped")
    return data, age_s
