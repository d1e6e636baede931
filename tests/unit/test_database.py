"""bridge.database: which database failures are an outage and which no waiting fixes, and the one error mapping."""

from __future__ import annotations

import psycopg
import pytest

from bridge.database import Database, connect_failure, describe_database, translate
from bridge.errors import SinkMisconfigured, SinkRefused, SinkUnavailable

WHERE = "db.example:5432/sensors"
_SERVER = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


@pytest.mark.parametrize(("words", "fix"), [
    ('FATAL:  password authentication failed for user "bridge"', "check the user and password"),
    ("fe_sendauth: no password supplied", "give DATABASE_URL a password"),
    ('FATAL:  role "brigde" does not exist', "create that login role"),
    ('FATAL:  database "sensor" does not exist', "create that database"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "bridge", database "sensors", no encryption',
     "pg_hba.conf"),
    ('FATAL:  permission denied for database "sensors"\nDETAIL:  User does not have CONNECT privilege.',
     "grant the role CONNECT"),
    ('FATAL:  role "iot_bridge" is not permitted to log in', "log in as a LOGIN role"),
])
def test_refusals_no_waiting_fixes_are_misconfigurations_naming_the_fix(words: str, fix: str) -> None:
    error = connect_failure(psycopg.OperationalError(_SERVER + words), where=WHERE)

    assert isinstance(error, SinkMisconfigured)
    assert fix in str(error) and WHERE in str(error) and "DATABASE_URL" in str(error)


@pytest.mark.parametrize("words", [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    "FATAL:  the database system is starting up",
    "FATAL:  the database system is shutting down",
    "FATAL:  the database system is in recovery mode",
    "FATAL:  sorry, too many clients already",
    "timeout expired",
    'could not translate host name "postgres" to address: Temporary failure in name resolution',
    # A server speaking another language (lc_messages) is not understood: waited out, not fatal.
    'FATAL:  Passwort-Authentifizierung für Benutzer »bridge« fehlgeschlagen',
])
def test_everything_else_is_an_outage(words: str) -> None:
    error = connect_failure(psycopg.OperationalError(_SERVER + words), where=WHERE)

    assert isinstance(error, SinkUnavailable)
    assert "cannot connect to the database at db.example:5432/sensors (DATABASE_URL)" in str(error)
    assert "\n" not in str(error), "one line in the log"


@pytest.mark.parametrize("error", [psycopg.DataError("value out of range"), psycopg.errors.UniqueViolation("dup")])
def test_data_the_database_refuses_would_fail_again_unchanged(error: psycopg.Error) -> None:
    assert isinstance(translate(error), SinkRefused)


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
])
def test_lost_connections_and_timeouts_may_pass_later(error: psycopg.Error) -> None:
    translated = translate(error, doing="cannot read rejected_messages")

    assert isinstance(translated, SinkUnavailable)
    assert str(translated).startswith(f"cannot read rejected_messages: {type(error).__name__}: ")


def test_describe_database_never_shows_the_password() -> None:
    described = describe_database("postgresql://bridge:s3cr3t@db.example:6543/sensors")

    assert described == "db.example:6543/sensors"
    assert describe_database("host=/run/postgresql dbname=sensors password=s3cr3t") == "/run/postgresql:5432/sensors"
    assert describe_database("postgresql://[") == "an unparseable DATABASE_URL"


def test_database_repr_and_keywords_keep_the_password_out() -> None:
    database = Database("postgresql://bridge:s3cr3t@db.example/sensors", application_name="bridge-1",
                        statement_timeout_ms=2000)

    assert "s3cr3t" not in repr(database)
    assert "s3cr3t" not in str(database.keywords())
    assert database.keywords()["options"] == "-c statement_timeout=2000"
    assert database.where == "db.example:5432/sensors"
