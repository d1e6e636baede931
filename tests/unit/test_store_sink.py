"""bridge.store.sink's start-up check: each mode's grants, named when missing (the writes: against PostgreSQL)."""

from __future__ import annotations

import pytest

from bridge.errors import SinkMisconfigured
from bridge.store.revisions import OnConflict
from bridge.store.sink import check_schema


class FakeConnection:
    """Answers the privilege query with `granted` for each check it asks, in order; records the query."""

    def __init__(self, granted: dict[str, bool] | None = None) -> None:
        self.granted = granted or {}
        self.queries: list[str] = []

    def execute(self, query: str) -> FakeConnection:
        self.queries.append(query)
        return self

    def fetchone(self) -> tuple[bool, ...]:
        checks = self.queries[-1].removeprefix("SELECT ").split(", has_")
        return tuple(self.granted.get(check.removeprefix("has_"), True) for check in checks)


def check(conn: FakeConnection, on_conflict: OnConflict) -> None:
    check_schema(conn, on_conflict=on_conflict)  # type: ignore[arg-type]


def test_keep_mode_asks_only_for_the_insert_only_grants() -> None:
    conn = FakeConnection()

    check(conn, OnConflict.KEEP)

    assert "'readings', 'value', 'UPDATE'" not in conn.queries[0] and "reading_revisions" not in conn.queries[0]


def test_every_mode_needs_the_marker_row_that_settles_a_lost_commit() -> None:
    conn = FakeConnection({"column_privilege('bridge_progress', 'batch_id', 'UPDATE')": False})

    with pytest.raises(SinkMisconfigured, match=r"lacks UPDATE on bridge_progress.batch_id, .*grant it iot_bridge$"):
        check(conn, OnConflict.KEEP)


@pytest.mark.parametrize(("missing", "named"), [
    ("column_privilege('readings', 'value', 'UPDATE')", "UPDATE on readings.value"),
    ("column_privilege('readings', 'ingested_at', 'UPDATE')", "UPDATE on readings.ingested_at"),
    ("table_privilege('reading_revisions', 'INSERT')", "INSERT on reading_revisions"),
])
def test_update_mode_names_the_missing_privilege_and_the_grant(missing: str, named: str) -> None:
    conn = FakeConnection({missing: False})

    with pytest.raises(SinkMisconfigured) as raised:
        check(conn, OnConflict.UPDATE)

    assert str(raised.value) == (
        f"the database role lacks {named}, which BRIDGE_ON_CONFLICT=update needs: grant it iot_bridge_update")


def test_a_role_without_the_bridge_s_grants_is_told_to_get_iot_bridge_first() -> None:
    conn = FakeConnection({"table_privilege('readings', 'INSERT')": False,
                           "column_privilege('readings', 'value', 'UPDATE')": False})

    with pytest.raises(SinkMisconfigured, match=r"lacks INSERT on readings, .*grant it iot_bridge$"):
        check(conn, OnConflict.UPDATE)
