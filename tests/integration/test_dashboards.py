"""Every panel of the readings dashboard runs, as the read-only role, on a real PostgreSQL and gives its columns.

Grafana is not run here: devstack/grafana_sql.py expands the panels' variables
and macros as Grafana's PostgreSQL data source does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from devstack.grafana_sql import QueryContext, expand, load_dashboard, panel_targets

DASHBOARD = load_dashboard()
TARGETS = panel_targets(DASHBOARD)
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LAG = timedelta(milliseconds=250)
CONTEXT = QueryContext(
    time_from=T0 - timedelta(minutes=10), time_to=T0 + timedelta(hours=2), interval=timedelta(minutes=5),
    variables={"sensor": ["1", "2"], "variable": ["temperature", "humidity"]},
)
# Each panel's columns, by title and refId: a new panel without an entry fails the test.
COLUMNS = {
    "Readings": {"A": ["time", "metric", "value"]},
    "Latest value per sensor": {"A": ["sensor_id", "variable", "time", "value", "unit", "revision"]},
    "Ingestion lag (ingested_at − timestamp)": {"A": ["time", "p50", "p95", "p99"]},
    "Rejected messages by reason code": {"A": ["time", "metric", "value"]},
    "Corrections (update mode)": {"A": ["time", "revised"], "B": ["time", "stale"]},
}


@pytest.fixture
def seeded(admin_database_url: str) -> None:
    """Three sensors, two variables, a reading a minute for an hour; one correction, one stale, two invalid."""
    with psycopg.connect(admin_database_url) as conn:
        conn.execute("""
            INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, ingested_at)
            SELECT s, %(t0)s + m * interval '1 minute', v, s * 100 + m, 'u', %(t0)s + m * interval '1 minute' + %(lag)s
            FROM generate_series(1, 3) s, generate_series(0, 59) m, unnest(ARRAY['temperature', 'humidity']) v
        """, {"t0": T0, "lag": LAG})
        conn.execute("""
            INSERT INTO reading_revisions (sensor_id, "timestamp", variable, value, unit, revision, ingested_at,
                                           replaced_at, replaced_by)
            VALUES (1, %(t0)s, 'temperature', 99, 'u', 0, %(t0)s, %(t0)s + interval '30 minutes', 'bridge-1')
        """, {"t0": T0})
        conn.execute("""
            INSERT INTO rejected_messages (received_at, topic, payload, reason, reason_code, client_id)
            VALUES (%(t0)s, 'sensors/1/readings', 'x', 'r', 'not_json', 'bridge-1'),
                   (%(t0)s + interval '1 minute', 'sensors/1/readings', 'y', 'r', 'not_json', 'bridge-1'),
                   (%(t0)s + interval '20 minutes', 'sensors/1/readings', 'z', 'r', 'stale_revision', 'bridge-2')
        """, {"t0": T0})


def run(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql)  # built from the dashboard, not user input
        assert cur.description is not None
        return [column.name for column in cur.description], cur.fetchall()


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("title", "ref", "raw_sql"), TARGETS, ids=[f"{t} {r}" for t, r, _ in TARGETS])
def test_every_panel_runs_as_the_reader_with_its_columns(
    reader_database_url: str, title: str, ref: str, raw_sql: str
) -> None:
    columns, rows = run(reader_database_url, expand(raw_sql, CONTEXT))

    assert columns == COLUMNS[title][ref]
    assert rows, "the seeded data shows"
    if columns[0] == "time":
        times = [row[0] for row in rows]
        assert all(isinstance(t, Decimal) and t % 300 == 0 for t in times), "epoch seconds on 5-minute buckets"
        assert times == sorted(times), "Grafana wants time series sorted by time"


def test_every_panel_is_checked_and_uses_the_readings_data_source() -> None:
    assert {(title, ref) for title, ref, _ in TARGETS} == {
        (title, ref) for title, refs in COLUMNS.items() for ref in refs}
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "readings"
        assert "Index" in panel["description"], f"{panel['title']}: say which index keeps it fast"


@pytest.mark.usefixtures("seeded")
def test_the_figures_are_the_seeded_ones(reader_database_url: str) -> None:
    sql = {(title, ref): raw for title, ref, raw in TARGETS}
    _, latest = run(reader_database_url, expand(sql[("Latest value per sensor", "A")], CONTEXT))
    _, lag = run(reader_database_url, expand(sql[("Ingestion lag (ingested_at − timestamp)", "A")], CONTEXT))
    _, rejected = run(reader_database_url, expand(sql[("Rejected messages by reason code", "A")], CONTEXT))
    _, readings = run(reader_database_url, expand(sql[("Readings", "A")], CONTEXT))

    assert [(s, v, t, value) for s, v, t, value, _, _ in latest] == [
        (1, "humidity", T0 + timedelta(minutes=59), 159.0), (1, "temperature", T0 + timedelta(minutes=59), 159.0),
        (2, "humidity", T0 + timedelta(minutes=59), 259.0), (2, "temperature", T0 + timedelta(minutes=59), 259.0)]
    assert {float(p) for _, *percentiles in lag for p in percentiles} == {LAG.total_seconds()}
    assert sorted((code, count) for _, code, count in rejected) == [("not_json", 2), ("stale_revision", 1)]
    assert {metric for _, metric, _ in readings} == {"1 temperature", "1 humidity", "2 temperature", "2 humidity"}


@pytest.mark.usefixtures("seeded")
def test_the_template_variables_list_the_sensors_and_their_variables(reader_database_url: str) -> None:
    queries = {variable["name"]: variable["query"] for variable in DASHBOARD["templating"]["list"]}

    _, sensors = run(reader_database_url, expand(queries["sensor"], CONTEXT))
    _, variables = run(reader_database_url, expand(queries["variable"], CONTEXT))

    assert sensors == [(1,), (2,), (3,)]
    assert variables == [("humidity",), ("temperature",)]


def test_the_reader_role_may_not_write(reader_database_url: str) -> None:
    for statement in ("DELETE FROM readings", "INSERT INTO reading_revisions DEFAULT VALUES"):
        with psycopg.connect(reader_database_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
