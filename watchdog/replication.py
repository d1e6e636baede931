"""Pure judgements of replication: the standbys and their synchrony, replay lag, failovers, the reader.

The database probe (watchdog/database.py) collects PrimaryFacts from the
primary (DATABASE_URL) and ReaderFacts from DATABASE_READ_URL each cycle;
these functions turn them into Results. No I/O here, as in watchdog/checks.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime

from watchdog.checks import Result, Status

REPLICATION = "replication"
REPLICATION_LAG = "replication-lag"
FAILOVER = "failover"
DATABASE_READER = "database-reader"

# `FIRST 2 (a, b, c)`, `ANY 1 (a, b)`, `2 (a, b)`: how many standbys a COMMIT waits for.
_NUM_SYNC = re.compile(r"^\s*(?:(?:FIRST|ANY)\s+)?(\d+)\s*\(", re.IGNORECASE)
_SYNCHRONOUS = ("sync", "quorum")
# Enough WAL positions to date a lag up to this many times the limit; an older lag reads "more than".
_HISTORY_SPAN = 2.0


@dataclass(frozen=True, slots=True)
class StandbyFacts:
    """One physical standby as the primary's pg_stat_replication shows it."""

    name: str  # application_name: the standby's cluster_name, or what its primary_conninfo says
    address: str  # client_addr, or "local socket"
    state: str  # streaming, catchup, startup, backup, stopping
    sync_state: str  # sync, quorum, potential, async
    replay_lsn: int | None  # bytes from 0/0; None until it has replayed anything

    def text(self) -> str:
        """e.g. `standby (10.0.0.2, streaming, sync)`."""
        return f"{self.name or '?'} ({self.address}, {self.state}, {self.sync_state})"


@dataclass(frozen=True, slots=True)
class PrimaryFacts:
    """What one connection to DATABASE_URL learned about replication."""

    server: str  # host:port libpq connected to: with a multi-host URL, the one that accepted
    in_recovery: bool  # a standby answered: DATABASE_URL lacks target_session_attrs=read-write
    system_id: int  # pg_control_system(): the same on a primary and its physical standbys
    timeline: int | None  # a promotion starts a new one; None on a standby
    wal_lsn: int | None  # pg_current_wal_lsn() in bytes; None on a standby
    sync_names: str  # synchronous_standby_names
    sees_replication: bool  # the role may read pg_stat_replication's columns (pg_read_all_stats)
    standbys: tuple[StandbyFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class ReaderFacts:
    """What one connection to DATABASE_READ_URL learned: which server answered, and whether it is a standby."""

    server: str
    in_recovery: bool


@dataclass(frozen=True, slots=True)
class ReplicationRules:
    """The settings the replication judgements need."""

    standbys: int  # WATCHDOG_STANDBYS: 0 means replication is not watched
    replay_lag_s: float
    failover_clear_s: float


@dataclass(frozen=True, slots=True)
class WalHistory:
    """The primary's WAL position each time it moved on (oldest first): a standby's replay position dates by it."""

    samples: tuple[tuple[datetime, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PrimaryIdentity:
    """Which server is the primary: a promotion changes the timeline, a restore the system identifier."""

    system_id: int
    timeline: int
    server: str

    def text(self) -> str:
        """e.g. `10.0.0.2:5432 (timeline 3)`."""
        return f"{self.server} (timeline {self.timeline})"


@dataclass(frozen=True, slots=True)
class FailoverWatch:
    """The primary as last seen, and the failover being reported (until failover_clear_s after it)."""

    current: PrimaryIdentity | None = None
    previous: PrimaryIdentity | None = None
    changed_at: datetime | None = None


def required_sync(sync_names: str) -> int:
    """How many synchronous standbys a COMMIT waits for under this synchronous_standby_names (0: none)."""
    if not sync_names.strip():
        return 0
    match = _NUM_SYNC.match(sync_names)
    return int(match.group(1)) if match else 1


def judge_replication(facts: PrimaryFacts | None, *, expected: int) -> Result:
    """DOWN when COMMITs wait for a synchronous standby that is not there; DEGRADED when fewer copies than wanted."""
    if facts is None:
        return _unreachable(REPLICATION)
    if (blind := _blind(facts)) is not None:
        return Result(REPLICATION, Status.DEGRADED, blind)
    streaming = [standby for standby in facts.standbys if standby.state == "streaming"]
    synchronous = [standby for standby in streaming if standby.sync_state in _SYNCHRONOUS]
    needed = required_sync(facts.sync_names)
    listing = "; ".join(standby.text() for standby in facts.standbys) or "none connected"
    if len(synchronous) < needed:
        detail = (f"{len(synchronous)} synchronous standbys of the {needed} every COMMIT waits for "
                  f"(synchronous_standby_names = '{facts.sync_names}'): writes wait until one is back; "
                  f"standbys: {listing}")
        return Result(REPLICATION, Status.DOWN, detail)
    problems = []
    if len(streaming) < expected:
        problems.append(f"{len(streaming)} of {expected} standbys streaming")
    if needed == 0:
        problems.append("replication is asynchronous (synchronous_standby_names is empty): a COMMIT returns "
                        "before any standby has it, so a failover can lose acknowledged readings")
    if problems:
        return Result(REPLICATION, Status.DEGRADED, f"{'; '.join(problems)}; standbys: {listing}")
    return Result(REPLICATION, Status.OK, f"{len(streaming)} streaming, {len(synchronous)} synchronous: {listing}")


def observe_wal(history: WalHistory, wal_lsn: int | None, now: datetime, *, limit_s: float) -> WalHistory:
    """Add the primary's WAL position if it moved on; forget what is older than the lag anyone needs to date."""
    if wal_lsn is None:
        return history
    samples = history.samples
    if samples and wal_lsn < samples[-1][1]:
        samples = ()  # another primary, on another timeline: the old positions date nothing
    if not samples or wal_lsn > samples[-1][1]:
        samples = (*samples, (now, wal_lsn))
    keep_from = now.timestamp() - _HISTORY_SPAN * limit_s
    first = next((i for i, (at, _) in enumerate(samples) if at.timestamp() >= keep_from), len(samples) - 1)
    return WalHistory(samples[first:])


def replay_lag_s(history: WalHistory, replay_lsn: int, now: datetime) -> float:
    """How long ago the primary had WAL that the standby has not replayed yet (0 when it replayed every sample).

    Dated by the watchdog's own samples, not by pg_stat_replication.replay_lag,
    which stops moving while a standby's replay is stuck and so hides it. WAL
    first seen this cycle dates to now: a lag shorter than one interval reads 0.
    """
    for at, lsn in history.samples:
        if lsn > replay_lsn:
            return (now - at).total_seconds()
    return 0.0


def judge_replication_lag(
    facts: PrimaryFacts | None, history: WalHistory, *, now: datetime, limit_s: float
) -> Result:
    """DEGRADED when a standby has not replayed WAL older than limit_s."""
    if facts is None:
        return _unreachable(REPLICATION_LAG)
    if (blind := _blind(facts)) is not None:
        return Result(REPLICATION_LAG, Status.UNKNOWN, blind)  # alerted once, as `replication`
    lags = [(standby, replay_lag_s(history, standby.replay_lsn, now))
            for standby in facts.standbys if standby.replay_lsn is not None]
    if not lags:
        return Result(REPLICATION_LAG, Status.UNKNOWN, "no standby to measure (see replication)")
    worst, lag_s = max(lags, key=lambda pair: pair[1])
    if lag_s > limit_s:
        oldest = (now - history.samples[0][0]).total_seconds()
        when = f"more than {oldest:.0f}" if lag_s >= oldest else f"{lag_s:.0f}"
        detail = (f"standby {worst.name} ({worst.address}) has not replayed WAL the primary wrote {when} s ago "
                  f"(limit {limit_s:g} s): reads from it are that old, and a failover to it must replay the rest first")
        return Result(REPLICATION_LAG, Status.DEGRADED, detail)
    return Result(REPLICATION_LAG, Status.OK, "replay lag " + ", ".join(f"{s.name} {lag:.0f} s" for s, lag in lags))


def judge_failover(
    watch: FailoverWatch, facts: PrimaryFacts | None, *, now: datetime, clear_s: float
) -> tuple[Result, FailoverWatch]:
    """DEGRADED (alerted at once) for clear_s after the primary changed; the first primary seen is the baseline."""
    if facts is None or facts.in_recovery or facts.timeline is None:
        return Result(FAILOVER, Status.UNKNOWN, "no primary answered DATABASE_URL"), watch
    seen = PrimaryIdentity(facts.system_id, facts.timeline, facts.server)
    current = watch.current
    if current is None:
        return Result(FAILOVER, Status.OK, f"primary {seen.text()}"), FailoverWatch(seen)
    if (seen.system_id, seen.timeline) != (current.system_id, current.timeline):
        watch = FailoverWatch(current=seen, previous=current, changed_at=now)
    else:
        # The same timeline at another address is the same server moved (a new pod IP), not a failover.
        watch = replace(watch, current=seen)
    if watch.changed_at is None or watch.previous is None or (now - watch.changed_at).total_seconds() > clear_s:
        return Result(FAILOVER, Status.OK, f"primary {seen.text()}"), FailoverWatch(seen)
    detail = f"the primary changed: now {seen.text()}, was {watch.previous.text()}"
    if seen.system_id != watch.previous.system_id:
        detail += " — another database cluster (its system identifier differs): restored from a backup?"
    return Result(FAILOVER, Status.DEGRADED, detail, confirmed=True), watch


def judge_reader(error: str | None, facts: ReaderFacts | None, *, elapsed_ms: float) -> Result:
    """DATABASE_READ_URL: DOWN when nothing answers; OK naming the server, and whether it is a standby."""
    if error is not None or facts is None:
        return Result(DATABASE_READER, Status.DOWN, f"DATABASE_READ_URL: {error or 'no answer'}")
    if facts.in_recovery:
        return Result(DATABASE_READER, Status.OK, f"standby {facts.server} answers in {elapsed_ms:.0f} ms")
    return Result(DATABASE_READER, Status.OK,
                  f"{facts.server} answers in {elapsed_ms:.0f} ms, but it is a primary: reads are not offloaded")


def _unreachable(component: str) -> Result:
    return Result(component, Status.UNKNOWN, "the primary is unreachable (see database)")


def _blind(facts: PrimaryFacts) -> str | None:
    """Why replication cannot be judged from these facts, if it cannot."""
    if facts.in_recovery:
        return (f"DATABASE_URL reached {facts.server}, a standby: replication is judged on the primary; "
                "name every server in DATABASE_URL with target_session_attrs=read-write")
    if not facts.sees_replication:
        return ("the watchdog's database role may not read pg_stat_replication: "
                "GRANT pg_read_all_stats TO it (schema.sql grants it to iot_watchdog)")
    return None
