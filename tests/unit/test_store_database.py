"""bridge.store.database: which failures are an outage and which no waiting fixes, and the one error mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import psycopg
import pytest

from bridge.errors import SinkMisconfigured, SinkRefused, SinkUnavailable
from bridge.store.database import (
    CommitWarnings,
    Database,
    connect_failure,
    describe_database,
    translate,
    unconfirmed_commit,
)

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


# libpq's words (through psycopg) when every host of a multi-host DATABASE_URL failed.
_MULTI_HOST = (
    'connection failed: connection to server at "10.0.0.6", port 5432 failed: {last}\n'
    "Multiple connection attempts failed. All failures were:\n"
    "- host: '10.0.0.5', port: '5432', hostaddr: '10.0.0.5': connection failed: connection to server at "
    '"10.0.0.5", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP '
    "connections?\n- host: '10.0.0.6', port: '5432', hostaddr: '10.0.0.6': connection failed: connection to server "
    'at "10.0.0.6", port 5432 failed: {last}'
)


def test_no_writable_server_among_several_hosts_is_an_outage() -> None:
    """The primary is down and the standby not yet promoted: a failover in progress, waited out."""
    error = connect_failure(psycopg.OperationalError(_MULTI_HOST.format(last="session is read-only")), where=WHERE)

    assert isinstance(error, SinkUnavailable)
    assert "\n" not in str(error)


def test_a_refusal_from_any_of_several_hosts_is_still_a_misconfiguration() -> None:
    words = _MULTI_HOST.format(last='FATAL:  password authentication failed for user "bridge"')

    assert isinstance(connect_failure(psycopg.OperationalError(words), where=WHERE), SinkMisconfigured)


@pytest.mark.parametrize(("conninfo", "described"), [
    ("postgresql://bridge:s3cr3t@db1:5432,db2:6543/sensors?target_session_attrs=read-write",
     "db1:5432,db2:6543/sensors"),
    ("postgresql://bridge@db1,db2/sensors", "db1:5432,db2:5432/sensors"),
    ("host=db1,db2 port=6543 dbname=sensors password=s3cr3t target_session_attrs=read-write",
     "db1:6543,db2:6543/sensors"),
    ("host=db1,db2 port=5432,6543 dbname=sensors", "db1:5432,db2:6543/sensors"),
])
def test_describe_database_names_every_host_of_a_multi_host_url(conninfo: str, described: str) -> None:
    assert describe_database(conninfo) == described


def test_a_write_on_a_standby_names_the_fix() -> None:
    error = translate(psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"))

    assert isinstance(error, SinkUnavailable)
    assert "target_session_attrs=read-write" in str(error) and "cannot execute INSERT" in str(error)


@dataclass
class FakeNotice:
    message_primary: str | None
    message_detail: str | None = None


_DETAIL = "The transaction has already committed locally, but might not have been replicated to the standby."


@pytest.mark.parametrize("notice", [
    FakeNotice("canceling wait for synchronous replication due to user request", _DETAIL),
    FakeNotice("canceling the wait for synchronous replication and terminating connection due to administrator "
               "command", _DETAIL),
    FakeNotice("a warning worded otherwise", _DETAIL),
])
def test_the_warnings_of_a_commit_the_standby_did_not_confirm_are_recognised(notice: FakeNotice) -> None:
    assert unconfirmed_commit(notice) is not None


@pytest.mark.parametrize("notice", [
    FakeNotice("there is no transaction in progress"),
    FakeNotice("relation \"bridge_staging\" already exists, skipping"),
    FakeNotice(None),
])
def test_other_notices_are_not_taken_for_an_unconfirmed_commit(notice: FakeNotice) -> None:
    assert unconfirmed_commit(notice) is None


def test_commit_warnings_keep_what_came_since_the_last_clear() -> None:
    warnings = CommitWarnings()
    notices: list[Callable[[FakeNotice], None]] = []
    warnings.watch(SimpleNamespace(add_notice_handler=notices.append))  # type: ignore[arg-type]
    [handler] = notices

    handler(FakeNotice("canceling wait for synchronous replication due to user request", _DETAIL))
    warnings.clear()
    handler(FakeNotice("there is no transaction in progress"))
    assert warnings.take() is None
    handler(FakeNotice("canceling wait for synchronous replication due to user request", _DETAIL))

    assert warnings.take() == f"canceling wait for synchronous replication due to user request {_DETAIL}"
    assert warnings.take() is None, "taken once"
