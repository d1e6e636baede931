"""Dead-letter replay: re-validate rejected messages under the current rules, store those now valid.

The planning here is pure (no I/O); the database is reached only through a
`ReplayStore`, so the rules can be tested with a fake. The evidence in
rejected_messages is never changed: each replay appends a row to
rejected_replays in the same transaction as the readings it stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import NamedTuple, Protocol

from bridge.errors import SinkRefused
from bridge.model import Limits, Rejection, Row
from bridge.validation import parse_message
from iotcommon.contract import RejectionCode


class ReplayResult(StrEnum):
    """What replaying one rejected message came to: the words rejected_replays.outcome allows (schema.sql)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    STILL_INVALID = "still invalid"
    PARTLY_STORED = "partly stored"


class RejectedMessage(NamedTuple):
    """A row of rejected_messages as replay sees it."""

    id: int
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    code: RejectionCode = RejectionCode.UNKNOWN
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Criteria:
    """Which rejected messages to replay (the command-line filters)."""

    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    codes: frozenset[RejectionCode] = frozenset()  # empty: any code
    topic: str | None = None
    limit: int | None = None
    again: bool = False


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replaying one rejected message did; recorded in rejected_replays."""

    result: ReplayResult
    detail: str
    readings_stored: int = 0


class ReplayStore(Protocol):
    """The database side of replay."""

    def candidates(self, *, since: datetime | None, until: datetime | None) -> Iterable[RejectedMessage]:
        """Rejected messages received in [since, until), oldest id first."""
        ...

    def store(self, rejected_id: int, rows: Sequence[Row], decide: Callable[[int], ReplayOutcome]) -> ReplayOutcome:
        """Insert `rows` (ON CONFLICT DO NOTHING) and the outcome decide(stored) in one transaction.

        Raises SinkRefused when the database refuses the rows (nothing is written then).
        """
        ...


class Selection(Enum):
    """Whether a candidate is replayed, filtered out, or deliberately skipped."""

    REPLAY = "replay"
    FILTERED = "filtered"
    CONFLICT = "skipped: a conflicting duplicate; the stored reading is kept"
    REPLAYED = "skipped: already replayed (use --again)"


@dataclass(frozen=True, slots=True)
class Plan:
    """What re-validating one rejected message under the current rules gives."""

    message: RejectedMessage
    rows: tuple[Row, ...]
    rejections: tuple[Rejection, ...]

    @property
    def problems(self) -> str:
        """The reasons that still apply, joined."""
        return "; ".join(rejection.reason for rejection in self.rejections)


@dataclass(slots=True)
class ReplaySummary:
    """Counters of one replay run."""

    examined: int = 0
    now_valid: int = 0
    stored: int = 0
    duplicates: int = 0
    still_invalid: int = 0
    skipped: int = 0

    def line(self, *, dry_run: bool) -> str:
        """The one-line summary printed at the end."""
        counts = (
            f"examined={self.examined} now_valid={self.now_valid} stored={self.stored} "
            f"duplicates={self.duplicates} still_invalid={self.still_invalid} skipped={self.skipped}"
        )
        return f"replay-rejected (dry run, nothing written): {counts}" if dry_run else f"replay-rejected: {counts}"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches an MQTT topic filter (`+` one level, `#` the rest; else exact)."""
    levels = topic.split("/")
    for index, level in enumerate(topic_filter.split("/")):
        if level == "#":
            return True  # MQTT: "a/#" also matches "a" itself
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(topic_filter.split("/")) == len(levels)


def select(message: RejectedMessage, criteria: Criteria) -> Selection:
    """Apply the filters; conflicts and already-replayed messages are skipped, not filtered."""
    if not _matches(message, criteria):
        return Selection.FILTERED
    # A conflict's key is already stored with another value (a stale revision's
    # with a higher revision): no rule change can store it (ON CONFLICT DO NOTHING
    # keeps the stored row), so replaying it would only record a misleading
    # 'duplicate'. Resolving a conflict is a human decision.
    if message.code in (RejectionCode.CONFLICT, RejectionCode.STALE_REVISION):
        return Selection.CONFLICT
    if message.replayed and not criteria.again:
        return Selection.REPLAYED
    return Selection.REPLAY


def _matches(message: RejectedMessage, criteria: Criteria) -> bool:
    return (
        (criteria.since is None or message.received_at >= criteria.since)
        and (criteria.until is None or message.received_at < criteria.until)
        and (criteria.reason is None or criteria.reason in message.reason)
        and (not criteria.codes or message.code in criteria.codes)
        and (criteria.topic is None or topic_matches(criteria.topic, message.topic))
    )


def plan_replay(message: RejectedMessage, *, now: datetime, limits: Limits) -> Plan:
    """Re-validate the stored topic and raw payload as the worker would at `now`."""
    parsed = parse_message(message.topic, message.payload, now=now, limits=limits)
    return Plan(message, parsed.rows, parsed.rejections)


def decide(plan: Plan, stored: int) -> ReplayOutcome:
    """The outcome of a plan once `stored` of its rows were inserted."""
    if not plan.rows:
        return ReplayOutcome(ReplayResult.STILL_INVALID, plan.problems)
    if plan.rejections:
        detail = f"{stored} of {len(plan.rows)} valid readings stored; {plan.problems}"
        return ReplayOutcome(ReplayResult.PARTLY_STORED, detail, stored)
    if stored == 0:
        return ReplayOutcome(ReplayResult.DUPLICATE,
                             "every reading was already stored under its key; the stored rows were kept")
    existing = len(plan.rows) - stored
    detail = f"{stored} readings stored" + (f", {existing} already stored" if existing else "")
    return ReplayOutcome(ReplayResult.STORED, detail, stored)


def replay_rejected(
    store: ReplayStore,
    criteria: Criteria,
    *,
    limits: Limits,
    now: Callable[[], datetime],
    dry_run: bool,
    report: Callable[[str], None],
) -> ReplaySummary:
    """Replay the selected rejected messages one by one; with dry_run, only report."""
    summary = ReplaySummary()
    for message in store.candidates(since=criteria.since, until=criteria.until):
        selection = select(message, criteria)
        if selection is Selection.FILTERED:
            continue
        if selection is not Selection.REPLAY:
            summary.skipped += 1
            report(f"#{message.id} {selection.value}")
            continue
        if criteria.limit is not None and summary.examined >= criteria.limit:
            break
        summary.examined += 1
        plan = plan_replay(message, now=now(), limits=limits)
        outcome = decide(plan, len(plan.rows)) if dry_run else _store(store, plan)
        _count(summary, plan, outcome, dry_run=dry_run)
        report(f"#{message.id} {'would be ' if dry_run else ''}{outcome.result}: {outcome.detail}")
    return summary


def _store(store: ReplayStore, plan: Plan) -> ReplayOutcome:
    try:
        return store.store(plan.message.id, plan.rows, lambda stored: decide(plan, stored))
    except SinkRefused as exc:
        # Valid by the contract but refused by the database (a rule the validator
        # does not know): record that, so the next run skips it like the others.
        refused = ReplayOutcome(ReplayResult.STILL_INVALID, f"database refused the readings: {exc}")
        return store.store(plan.message.id, (), lambda _: refused)


def _count(summary: ReplaySummary, plan: Plan, outcome: ReplayOutcome, *, dry_run: bool) -> None:
    if outcome.result is ReplayResult.STILL_INVALID:
        summary.still_invalid += 1
        return
    summary.now_valid += 1
    if dry_run:
        return  # whether a key is already stored is found out only by writing
    summary.stored += outcome.readings_stored
    summary.duplicates += len(plan.rows) - outcome.readings_stored
