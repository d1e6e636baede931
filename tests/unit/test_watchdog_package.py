"""`import watchdog` must give our package, not PyPI's file-system `watchdog`."""

from __future__ import annotations

from pathlib import Path

import watchdog

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_imported_watchdog_is_ours() -> None:
    location = Path(watchdog.__file__ or "").resolve()

    assert location.is_relative_to(REPO_ROOT), (
        f"`import watchdog` found {location}, not this repository: PyPI's watchdog is shadowing ours "
        "(see the README's Watchdog section)"
    )


def test_the_runnable_module_is_ours() -> None:
    import watchdog.__main__ as entry

    assert callable(entry.main)
    assert Path(entry.__file__).resolve().parent == REPO_ROOT / "watchdog"
