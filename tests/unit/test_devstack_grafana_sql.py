"""devstack.grafana_sql: Grafana's variables and PostgreSQL macros, expanded as Grafana's own code does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack.grafana_sql import MacroError, QueryContext, expand, format_interval, parse_interval, rfc3339

CONTEXT = QueryContext(
    time_from=datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
    time_to=datetime(2026, 3, 1, 9, 30, 0, 500_000, tzinfo=UTC),
    interval=timedelta(minutes=5),
    variables={"sensor": ["1", "42"], "variable": ["temperature", "it's"]},
)


@pytest.mark.parametrize(("raw", "sql"), [
    ("$__timeFilter(\"timestamp\")", "\"timestamp\" BETWEEN '2026-03-01T08:00:00Z' AND '2026-03-01T09:30:00.5Z'"),
    ("$__timeFrom() < $__timeTo()", "'2026-03-01T08:00:00Z' < '2026-03-01T09:30:00.5Z'"),
    ("$__time(at)", 'at AS "time"'),
    ("$__timeEpoch(at)", 'extract(epoch from at) AS "time"'),
    ("$__timeGroup(at, $__interval)", "floor(extract(epoch from at)/300)*300"),
    ("$__timeGroupAlias(at, '30s')", 'floor(extract(epoch from at)/30)*30 AS "time"'),
    ("$__timeGroupAlias(at, 500ms)", 'floor(extract(epoch from at)/0.5)*0.5 AS "time"'),
    ("$__unixEpochFilter(t)", "t >= 1772352000 AND t <= 1772357400"),
    ("sensor_id IN ($sensor)", "sensor_id IN ('1','42')"),
    ("variable IN (${variable})", "variable IN ('temperature','it''s')"),
    ("ARRAY[[[sensor]]]", "ARRAY['1','42']"),
    ("$__interval / $__interval_ms", "5m / 300000"),
    ("$unknown stays", "$unknown stays"),
])
def test_expansion_matches_grafana(raw: str, sql: str) -> None:
    assert expand(raw, CONTEXT) == sql


@pytest.mark.parametrize(("raw", "problem"), [
    ("$__timeFilter()", "missing time column"),
    ("$__timeGroup(at)", "needs time column and interval"),
    ("$__timeGroup(at, soon)", "error parsing interval soon"),
    ("$__nothing(at)", "undefined macro: $__nothing"),
])
def test_what_grafana_refuses_is_refused(raw: str, problem: str) -> None:
    with pytest.raises(MacroError, match=problem.replace("$", r"\$")):
        expand(raw, CONTEXT)


@pytest.mark.parametrize(("interval", "text"), [
    (timedelta(milliseconds=500), "500ms"), (timedelta(seconds=30), "30s"), (timedelta(seconds=90), "90s"),
    (timedelta(minutes=5), "5m"), (timedelta(hours=1), "1h"), (timedelta(days=1), "1d"),
])
def test_intervals_are_written_and_read_back_as_grafana_writes_them(interval: timedelta, text: str) -> None:
    assert format_interval(interval) == text
    assert parse_interval(text) == interval


def test_times_are_utc_rfc3339_without_trailing_zeros() -> None:
    plus_two = datetime(2026, 3, 1, 10, 0, 0, 120_000, tzinfo=UTC).astimezone(tz=None)
    assert rfc3339(plus_two) == "2026-03-01T10:00:00.12Z"
