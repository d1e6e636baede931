"""One check cycle and the loop around it; the health file and the status table."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from iotcommon.health import read_fresh_health, write_health
from watchdog.checks import (
    BROKER,
    DATA_LOSS,
    DATABASE,
    DropWatch,
    PartitionFacts,
    Result,
    Status,
    WorkerRules,
    judge_data_loss,
    judge_partitions,
    judge_site_bridges,
    judge_workers,
    observe_dropped,
    probe_result,
)
from watchdog.database import PrimaryProbe, ReaderProbe
from watchdog.replication import (
    REPLICATION,
    FailoverWatch,
    ReplicationRules,
    WalHistory,
    judge_failover,
    judge_reader,
    judge_replication,
    judge_replication_lag,
    observe_wal,
)
from watchdog.state import Alert, AlertBook
from watchdog.watcher import Observations

logger = logging.getLogger(__name__)


class Watcher(Protocol):
    """What the loop needs from the MQTT side (BrokerWatcher)."""

    def probe(self, timeout_s: float) -> tuple[str | None, float]: ...

    def observations(self) -> Observations: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings a cycle needs."""

    broker_timeout_s: float
    database_timeout_s: float
    expected_workers: tuple[str, ...]
    min_workers: int
    rules: WorkerRules
    data_loss_clear_s: float
    site_bridges: tuple[str, ...] = ()
    min_partitions_ahead: int = 2
    replication: ReplicationRules | None = None  # None: replication is not watched (WATCHDOG_STANDBYS=0)


class Watchdog:
    """Runs every check, feeds the results to the AlertBook and hands alerts to `submit`."""

    def __init__(
        self,
        watcher: Watcher,
        probe_database: Callable[[float], PrimaryProbe],
        *,
        book: AlertBook,
        submit: Callable[[Alert], None],
        limits: Limits,
        health_path: str,
        now: Callable[[], datetime],
        probe_reader: Callable[[float], ReaderProbe] | None = None,
        probe_partitions: Callable[[float], PartitionFacts | str] | None = None,
    ) -> None:
        self._watcher = watcher
        self._probe_database = probe_database
        self._probe_reader = probe_reader
        self._probe_partitions = probe_partitions
        self._book = book
        self._submit = submit
        self._limits = limits
        self._health_path = health_path
        self._now = now
        self._drops = DropWatch()
        self._wal = WalHistory()
        self._failover = FailoverWatch()
        self.cycles = 0
        self.alerts = 0
        self.last_results: list[Result] = []

    def check(self, *, patient: bool = True) -> list[Result]:
        """Run every check once and return the results (no alerting).

        Args:
            patient: give workers a heartbeat timeout's grace after (re)subscribing;
                --once is not patient and judges the retained messages as they are.
        """
        limits = self._limits
        broker_error, broker_s = self._watcher.probe(limits.broker_timeout_s)
        primary = self._probe_database(limits.database_timeout_s)
        database_error = primary.error
        seen, now = self._watcher.observations(), self._now()
        listening_s = math.inf if not patient else (
            (now - seen.listening_since).total_seconds() if seen.listening_since else 0.0
        )
        results = [
            probe_result(BROKER, broker_error, ok_detail=f"probe round trip {broker_s * 1000:.0f} ms"),
            probe_result(DATABASE, database_error, ok_detail=f"SELECT 1 in {primary.elapsed_ms:.0f} ms"),
        ]
        results += self._check_partitions(database_down=database_error is not None)
        if limits.replication is not None:
            results += self._judge_replication(primary, now, limits.replication)
        if self._probe_reader is not None:
            reader = self._probe_reader(limits.database_timeout_s)
            results.append(judge_reader(reader.error, reader.facts, elapsed_ms=reader.elapsed_ms))
        writes_wait = any(r.component == REPLICATION and r.status is Status.DOWN for r in results)
        results += judge_workers(
            seen.views, limits.expected_workers, now=now, listening_s=listening_s,
            broker_ok=broker_error is None, database_down=database_error is not None,
            min_workers=limits.min_workers, rules=limits.rules, writes_wait=writes_wait,
        )
        results += judge_site_bridges(seen.links, limits.site_bridges, now=now, broker_ok=broker_error is None)
        self._drops = observe_dropped(self._drops, seen.dropped, now)
        loss, self._drops = judge_data_loss(self._drops, now=now, clear_s=limits.data_loss_clear_s)
        if broker_error is not None:
            loss = Result(DATA_LOSS, Status.UNKNOWN, "broker down")
        return [*results, loss]

    def _check_partitions(self, *, database_down: bool) -> list[Result]:
        """The partitions of readings, when partitioned (none for a plain table, or without the probe)."""
        if self._probe_partitions is None:
            return []
        facts = "database down" if database_down else self._probe_partitions(self._limits.database_timeout_s)
        result = judge_partitions(facts, min_ahead=self._limits.min_partitions_ahead, database_down=database_down)
        return [] if result is None else [result]

    def _judge_replication(self, primary: PrimaryProbe, now: datetime, rules: ReplicationRules) -> list[Result]:
        """The replication, replication-lag and failover results; keeps the WAL history and the primary seen."""
        facts = primary.facts
        if primary.facts_error is not None:
            replication = Result(REPLICATION, Status.DEGRADED, primary.facts_error)
        else:
            replication = judge_replication(facts, expected=rules.standbys)
        if facts is not None:
            self._wal = observe_wal(self._wal, facts.wal_lsn, now, limit_s=rules.replay_lag_s)
        lag = judge_replication_lag(facts, self._wal, now=now, limit_s=rules.replay_lag_s)
        failover, self._failover = judge_failover(self._failover, facts, now=now, clear_s=rules.failover_clear_s)
        return [replication, lag, failover]

    def run_cycle(self) -> list[Result]:
        """Check, alert on state changes, and refresh the health file."""
        results = self.check()
        now = self._now()
        for alert in self._book.observe(results, now):
            self.alerts += 1
            self._submit(alert)
        self.cycles += 1
        self.last_results = results
        for result in results:
            logger.debug("%s: %s (%s)", result.component, result.status, result.detail)
        self._write_health(results, now)
        return results

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Run a cycle every interval_s (fixed rate) until `stop` is set; survive any bug in a cycle."""
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.run_cycle()
            except Exception:
                logger.exception("check cycle %d failed; trying again next interval", self.cycles + 1)
            next_at += interval_s
            # After a long cycle, start again from now rather than running cycles back to back.
            next_at = max(next_at, time.monotonic())
            stop.wait(next_at - time.monotonic())

    def down(self) -> list[str]:
        """Components currently alerted as down."""
        return self._book.down()

    def _write_health(self, results: list[Result], now: datetime) -> None:
        snapshot: dict[str, Any] = {
            "at": now.isoformat(),
            "cycles": self.cycles,
            "alerts": self.alerts,
            "components": {result.component: str(result.status) for result in results},
            "down": self._book.down(),
        }
        try:
            write_health(self._health_path, snapshot)
        except OSError:
            logger.exception("could not write health file %s", self._health_path)


def status_table(results: list[Result]) -> str:
    """The --once table: component, status and detail, one line each."""
    width = max([len("COMPONENT"), *(len(result.component) for result in results)])
    lines = [f"{'COMPONENT':<{width}}  {'STATUS':<8}  DETAIL"]
    lines += [f"{r.component:<{width}}  {r.status.upper():<8}  {r.detail}" for r in results]
    return "\n".join(lines)


def check_health(path: str, *, now: datetime, max_age_s: float) -> tuple[bool, str]:
    """(healthy, explanation): the watchdog finished a cycle recently; what it found is reported, not judged."""
    try:
        data, age_s = read_fresh_health(path, now=now, max_age_s=max_age_s, beat="check cycle", who="watchdog")
    except ValueError as exc:
        return False, str(exc)
    down = ", ".join(data.get("down") or []) or "nothing"
    return True, f"healthy: cycle {data.get('cycles')} {age_s:.1f} s ago; down: {down}"
