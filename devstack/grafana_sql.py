"""Grafana's PostgreSQL data source, as far as our dashboards use it: template variables and macros, expanded.

Grafana is not run by the tests; this reads the panels' queries from the
provisioned dashboards and turns a panel's rawSql into the SQL Grafana would
send, so the test suite and benchmarks/dashboard_queries.py can run it. It
follows Grafana's own code:

- template variables (the front end, `interpolateVariable` of the SQL data
  sources): a multi-value or include-All variable becomes its values, each
  quoted as an SQL literal, joined by commas ('1','2'); `$__interval` the
  interval as Grafana writes it (30s, 5m, 1h);
- macros (the back end, pkg/tsdb/grafana-postgresql-datasource/macros.go):
  $__time, $__timeEpoch, $__timeFilter, $__timeFrom, $__timeTo,
  $__timeGroup, $__timeGroupAlias, $__unixEpochFilter; times in UTC,
  RFC 3339 with nanoseconds; an unknown macro is an error, as in Grafana.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.processes import REPO_ROOT

_MACRO = re.compile(r"\$__(\w+)\(([^)]*)\)")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}|\[\[(\w+)\]\]")
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def load_dashboard(name: str = "iot-readings.json") -> dict[str, Any]:
    """A provisioned dashboard's JSON model, from deploy/grafana/dashboards/ (the readings dashboard by default)."""
    model: dict[str, Any] = json.loads((REPO_ROOT / "deploy/grafana/dashboards" / name).read_text(encoding="utf-8"))
    return model


def panel_targets(dashboard: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, rawSql) of every query of every panel, in the dashboard's order."""
    return [(panel["title"], target["refId"], target["rawSql"])
            for panel in dashboard["panels"] for target in panel["targets"]]


class MacroError(ValueError):
    """A macro Grafana would refuse: unknown, or missing its arguments."""


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a panel: the time range, the interval, the variables' chosen values."""

    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, Sequence[str]] = field(default_factory=dict)


def expand(raw_sql: str, context: QueryContext) -> str:
    """The SQL Grafana would send for a panel's rawSql: variables first (front end), then macros (back end)."""
    return expand_macros(expand_variables(raw_sql, context), context)


def expand_variables(raw_sql: str, context: QueryContext) -> str:
    """Replace $name, ${name} and [[name]]; $__interval and $__interval_ms; unknown names stay (Grafana's way)."""
    builtins = {"__interval": format_interval(context.interval),
                "__interval_ms": str(int(context.interval / timedelta(milliseconds=1)))}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in builtins:
            return builtins[name]
        if name in context.variables:
            return ",".join(quote_literal(value) for value in context.variables[name])
        return match.group(0)

    return _VARIABLE.sub(replace, raw_sql)


def expand_macros(sql: str, context: QueryContext) -> str:
    """Replace every $__macro(args) as Grafana's PostgreSQL back end does."""

    def replace(match: re.Match[str]) -> str:
        args = [arg.strip() for arg in match.group(2).split(",")] if match.group(2).strip() else []
        return _macro(match.group(1), args, context)

    return _MACRO.sub(replace, sql)


def _macro(name: str, args: list[str], context: QueryContext) -> str:
    start, end = rfc3339(context.time_from), rfc3339(context.time_to)
    if name in ("timeFrom", "timeTo"):
        return f"'{start if name == 'timeFrom' else end}'"
    if not args:
        raise MacroError(f"missing time column argument for macro $__{name}")
    column = args[0]
    if name == "time":
        return f'{column} AS "time"'
    if name == "timeEpoch":
        return f'extract(epoch from {column}) AS "time"'
    if name == "timeFilter":
        return f"{column} BETWEEN '{start}' AND '{end}'"
    if name == "unixEpochFilter":
        from_s, to_s = int(context.time_from.timestamp()), int(context.time_to.timestamp())
        return f"{column} >= {from_s} AND {column} <= {to_s}"
    if name in ("timeGroup", "timeGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro $__{name} needs time column and interval and optional fill value")
        seconds = _go_float(parse_interval(args[1].strip("'")).total_seconds())
        group = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
        return group + (' AS "time"' if name == "timeGroupAlias" else "")
    raise MacroError(f"undefined macro: $__{name}")


def quote_literal(value: str) -> str:
    """An SQL string literal, as Grafana's SQL data sources quote a variable's value."""
    return "'" + value.replace("'", "''") + "'"


def format_interval(interval: timedelta) -> str:
    """Grafana's rendering of an interval: the largest unit that divides it (500ms, 30s, 5m, 1h, 1d)."""
    ms = round(interval / timedelta(milliseconds=1))
    for unit, size_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size_ms == 0:
            return f"{ms // size_ms}{unit}"
    return f"{ms}ms"


def parse_interval(text: str) -> timedelta:
    """An interval as Grafana writes one (5m, 30s, 1h, 500ms); MacroError otherwise."""
    match = _INTERVAL.match(text)
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def rfc3339(at: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: no trailing zeros in the fraction, Z for the offset."""
    utc = at.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _go_float(value: float) -> str:
    """Go's %v of a float64: 300 for 300.0, 0.5 for 0.5."""
    return str(int(value)) if value == int(value) else repr(value)
