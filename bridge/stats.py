"""Counters a worker keeps, reports in its heartbeat and logs at exit."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from iotcommon.contract import Heartbeat


@dataclass(slots=True)
class Stats:
    """Running totals. Each field has one writer thread, so no lock is needed."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    handler_errors: int = 0
    batches: int = 0
    db_errors: int = 0
    in_flight: int = 0
    inbox_peak: int = 0  # most messages waiting to be batched at once (bounded by BRIDGE_MAX_IN_FLIGHT)
    last_commit_at: datetime | None = None
    db_ok: bool = True  # as the pipeline last found the database (Pipeline decides; this reports it)
    mqtt_connected: bool = False
    revised: int = 0  # BRIDGE_ON_CONFLICT=update: readings that replaced a lower revision
    stale: int = 0  # ... and lower revisions than the stored one, dead-lettered
    read_peak: int = 0  # most messages one read of the socket brought, handed to the inbox together (fast path)
    commit_started_at: datetime | None = None  # set by the writer while a COMMIT waits for its answer

    def commit_started(self, at: datetime) -> None:
        """The writer sent COMMIT at `at` (the heartbeat thread reads how long it has waited)."""
        self.commit_started_at = at

    def commit_ended(self) -> None:
        """COMMIT returned (or failed)."""
        self.commit_started_at = None

    def commit_wait_s(self, at: datetime) -> float:
        """How long the COMMIT in progress has waited at `at`; 0 when none is."""
        started = self.commit_started_at
        return max(0.0, (at - started).total_seconds()) if started is not None else 0.0

    def heartbeat(self, *, client_id: str, at: datetime, commit_wait_warn_s: float | None = None) -> Heartbeat:
        """The counters as the contract's heartbeat, stamped `at`; a COMMIT over `commit_wait_warn_s` is stalled."""
        counters = asdict(self)
        del counters["commit_started_at"]
        wait_s = self.commit_wait_s(at)
        stalled = commit_wait_warn_s is not None and wait_s >= commit_wait_warn_s
        return Heartbeat(client_id=client_id, at=at, commit_wait_s=round(wait_s, 3), commit_stalled=stalled,
                         **counters)

    def summary(self) -> str:
        """The one-line summary logged at shutdown.

        The counters of corrections come last, so that what parses the line of
        the release before still finds its counters where they were.
        """
        return (
            f"received={self.received} stored={self.stored} duplicates={self.duplicates} "
            f"conflicts={self.conflicts} rejected={self.rejected} in_flight={self.in_flight} "
            f"revised={self.revised} stale={self.stale}"
        )
