"""The database probe: connect and run SELECT 1, within a timeout."""

from __future__ import annotations

import math

import psycopg


def probe_database(conninfo: str, *, timeout_s: float, application_name: str) -> str | None:
    """None when a fresh connection runs SELECT 1 in time, else the reason (never the password)."""
    try:
        with psycopg.connect(
            conninfo,
            autocommit=True,
            # libpq counts whole seconds and treats 1 as 2; the statement timeout covers the query.
            connect_timeout=max(math.ceil(timeout_s), 2),
            application_name=application_name,
            options=f"-c statement_timeout={int(timeout_s * 1000)}",
        ) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        # libpq's messages name host and port but never the password.
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return f"cannot run SELECT 1: {'; '.join(lines[:2]) or type(exc).__name__}"
    return None
