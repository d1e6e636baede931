"""The README's settings tables, read the way each program's config test checks its own against its Settings."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

_ROW = re.compile(r"^\|\s*`(?P<name>[A-Z][A-Z0-9_]*)`\s*\|(?P<default>[^|]*)\|")
_CODE = re.compile(r"`([^`]*)`")


def readme_tables(section: str | None = None) -> list[dict[str, str]]:
    """Each markdown table whose first column holds backticked variable names: name -> default cell.

    With `section`, only the tables under the README's `## section` heading.
    """
    assert README.is_file(), f"{README} is missing: it must document every setting in a table"
    text = README.read_text(encoding="utf-8")
    if section is not None:
        text = text[text.index(f"\n## {section}\n"):]
        text = text[:text.index("\n## ", 1)]
    tables: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if match:
            current[match["name"]] = match["default"].strip()
        elif not line.strip().startswith("|"):
            if current:
                tables.append(current)
            current = {}
    if current:
        tables.append(current)
    return tables


def readme_settings_table(prefix: str = "BRIDGE_") -> dict[str, str]:
    """The one README table of `prefix`* settings (the bridge's, or WATCHDOG_ for the watchdog's)."""
    tables = [table for table in readme_tables() if any(name.startswith(prefix) for name in table)]
    assert len(tables) == 1, f"expected one README table of {prefix}* settings, found {len(tables)}"
    return tables[0]
