"""PostgreSQL plumbing shared by the worker's sink and replay: one error mapping, connection set-up.

Which failures are an outage (wait and retry) and which no waiting can fix
(stop, naming the fix) is decided here, once, for every caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from bridge.errors import SinkError, SinkMisconfigured, SinkRefused, SinkUnavailable
from iotcommon.contract import RejectionCode

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# psycopg_pool retries a lost connection with its own backoff (1, 2, 4 s ...)
# until this deadline, then gives up until the next request: keep it short so
# the gaps between attempts stay short and our own capped backoff takes over.
POOL_RECONNECT_TIMEOUT_S = 5.0

# A connection refused by the server for one of these reasons stays refused
# however long we wait. libpq reports a failed connection as text only (no
# SQLSTATE: psycopg's OperationalError.sqlstate is None), so we match the
# server's words; a server configured for another language (lc_messages) is
# not recognised, and its refusals count as an outage: retried, not fatal.
_NO_WAITING_FIXES = tuple((re.compile(clue, re.IGNORECASE), fix) for clue, fix in (
    (r"password authentication failed", "check the user and password of DATABASE_URL"),
    (r"no password supplied", "give DATABASE_URL a password"),
    (r'role "[^"]*" does not exist', "create that login role and grant it iot_bridge (README, \"Running a worker\")"),
    (r'database "[^"]*" does not exist', "create that database and apply schema.sql to it, or fix DATABASE_URL"),
    (r"no pg_hba\.conf entry", "allow this host, user and database in the server's pg_hba.conf"),
    (r"permission denied for database", "grant the role CONNECT on the database"),
    (r"is not permitted to log in", "log in as a LOGIN role granted iot_bridge, not as iot_bridge itself"),
))


# PostgreSQL's words when a COMMIT stops waiting for the synchronous standby:
# "canceling wait for synchronous replication due to user request" (or "...
# and terminating connection due to administrator command"), detail "The
# transaction has already committed locally, but might not have been replicated
# to the standby."
_UNCONFIRMED_COMMIT = re.compile(
    r"canceling (the )?wait for synchronous replication|might not have been replicated", re.IGNORECASE
)


def translate(exc: psycopg.Error, *, doing: str = "") -> SinkError:
    """The sink error for a psycopg error: refused data, or an unavailable database.

    Data and integrity errors would fail again unchanged (SinkRefused);
    everything else (connection lost, statement timeout, server shutting down)
    may pass on a later attempt (SinkUnavailable).
    """
    words = str(exc).strip()
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        code = RejectionCode.NO_PARTITION if is_no_partition(exc) else RejectionCode.DATABASE_REFUSED
        return SinkRefused(words, code=code)
    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        # A standby (or a primary being demoted): waiting may fix it, if DATABASE_URL lets libpq find the primary.
        return SinkUnavailable(
            f"{prefix}the database is read-only ({words}): a standby? List every server in DATABASE_URL "
            "with target_session_attrs=read-write so that the worker finds the primary"
        )
    return SinkUnavailable(f"{prefix}{type(exc).__name__}: {words}")


def is_no_partition(exc: psycopg.Error) -> bool:
    """PostgreSQL's "no partition of relation ... found for row": a partitioned table has no partition for its key.

    By its SQLSTATE (23514, check_violation) and the absence of a constraint
    name, which a CHECK constraint's violation always carries: the server's
    words depend on its lc_messages, these do not.
    """
    return exc.sqlstate == "23514" and exc.diag.constraint_name is None


def connect_failure(exc: psycopg.Error, *, where: str) -> SinkError:
    """Why connecting failed, as SinkMisconfigured (no waiting fixes it) or SinkUnavailable (an outage)."""
    words = " ".join(str(exc).split())
    for clue, fix in _NO_WAITING_FIXES:
        if clue.search(words):
            return SinkMisconfigured(f"the database at {where} (DATABASE_URL) refused the connection: {words}; {fix}")
    return SinkUnavailable(f"cannot connect to the database at {where} (DATABASE_URL): {words}")


def describe_database(conninfo: str) -> str:
    """host:port/dbname of a conninfo or URL (host:port,host:port/dbname for several hosts); never the password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparseable DATABASE_URL"
    hosts = str(parts.get("host") or parts.get("hostaddr") or "localhost").split(",")
    ports = str(parts.get("port") or "").split(",")
    # libpq: one port for every host, or one port per host.
    ports = ports * len(hosts) if len(ports) == 1 else ports
    where = ",".join(f"{host or 'localhost'}:{port or 5432}" for host, port in zip(hosts, ports, strict=False))
    return f"{where}/{parts.get('dbname') or parts.get('user') or ''}"


class Notice(Protocol):
    """What we read of a server notice (psycopg.errors.Diagnostic)."""

    @property
    def message_primary(self) -> str | None: ...

    @property
    def message_detail(self) -> str | None: ...


def unconfirmed_commit(diagnostic: Notice) -> str | None:
    """PostgreSQL's warning that a COMMIT stopped waiting for the synchronous standby, or None for another notice.

    The transaction then committed on the primary only (src/backend/replication/
    syncrep.c: a cancelled wait). Matched in English, like the refusals above.
    """
    words = " ".join(filter(None, (diagnostic.message_primary, diagnostic.message_detail)))
    return words if _UNCONFIRMED_COMMIT.search(words) else None


class CommitWarnings:
    """Notes the warnings of unconfirmed COMMITs on the connections it watches (a psycopg notice handler)."""

    def __init__(self) -> None:
        self._seen: list[str] = []

    def watch(self, conn: psycopg.Connection[Any]) -> None:
        """Listen to `conn`'s notices."""
        conn.add_notice_handler(self._notice)

    def clear(self) -> None:
        """Forget what was seen (before a COMMIT)."""
        self._seen.clear()

    def take(self) -> str | None:
        """The first warning seen since clear(), if any; forgets them."""
        seen, self._seen = self._seen, []
        return seen[0] if seen else None

    def _notice(self, diagnostic: Notice) -> None:
        words = unconfirmed_commit(diagnostic)
        if words is not None:
            self._seen.append(words)


@dataclass(frozen=True)
class Database:
    """Where and how the worker connects: a conninfo or URL plus connection keywords."""

    conninfo: str = field(repr=False)  # may hold the password
    application_name: str
    statement_timeout_ms: int

    @property
    def where(self) -> str:
        """host:port/dbname, for messages; never the password."""
        return describe_database(self.conninfo)

    def keywords(self) -> dict[str, Any]:
        """Connection keywords for psycopg.connect and the pool."""
        return {
            "application_name": self.application_name,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={self.statement_timeout_ms}",
        }

    def connect(self) -> psycopg.Connection[Any]:
        """One connection outside the pool; psycopg.OperationalError when it fails."""
        return psycopg.connect(self.conninfo, **self.keywords())

    def pool(
        self, *, name: str, configure: Callable[[psycopg.Connection[Any]], None] | None = None
    ) -> ConnectionPool[Any]:
        """A one-connection pool, not yet opened: the sink opens it once the database has answered."""
        where = self.where
        return ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=1,  # one writer thread, one connection
            open=False,
            name=name,
            check=ConnectionPool.check_connection,
            configure=configure,
            reconnect_timeout=POOL_RECONNECT_TIMEOUT_S,
            reconnect_failed=lambda pool: logger.warning(
                "database %s still unreachable; trying again on the next batch", where
            ),
            kwargs=self.keywords(),
        )
