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
    db_ok: bool = True
    mqtt_connected: bool = False
    revised: int = 0  # BRIDGE_ON_CONFLICT=update: readings that replaced a lower revision
    stale: int = 0  # ... and lower revisions than the stored one, dead-lettered
    read_peak: int = 0  # most messages one read of the socket brought, handed to the inbox together (fast path)

    def heartbeat(self, *, client_id: str, at: datetime) -> Heartbeat:
        """The counters as the contract's heartbeat, stamped `at`."""
        return Heartbeat(client_id=client_id, at=at, **asdict(self))

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
