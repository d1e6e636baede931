"""Pure judgements: what the probes and the bridge's retained topics say about each component.

No I/O here: the MQTT watcher and the database probe collect facts, these
functions turn them into Results, and the state machine decides what to alert.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from iotcommon.contract import HEARTBEAT_PREFIX, Heartbeat, LinkState, WorkerStatus

BROKER = "broker"
DATABASE = "database"
WORKERS = "workers"
DATA_LOSS = "broker-data-loss"
SITE_BRIDGE_PREFIX = "site-bridge:"
PARTITIONS = "partitions"


class Status(StrEnum):
    """The outcome of one check."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"  # cannot tell (e.g. the broker is down): keeps the previous alert state

    @property
    def failing(self) -> bool:
        """Whether this outcome counts towards an alert."""
        return self in (Status.DOWN, Status.DEGRADED)


@dataclass(frozen=True, slots=True)
class Result:
    """One component's status and a line saying why."""

    component: str
    status: Status
    detail: str
    # The check already waited long enough (a heartbeat timeout): alert without
    # waiting for WATCHDOG_FAILURE_THRESHOLD cycles on top of it.
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the retained bridge/status and bridge/heartbeat topics say about one worker."""

    client_id: str
    status: WorkerStatus | None = None
    heartbeat: Heartbeat | None = None
    heartbeat_at: datetime | None = None  # when it was sent (retained) or received (live)
    malformed: str | None = None  # why its last heartbeat could not be read, if it could not


@dataclass(frozen=True, slots=True)
class WorkerRules:
    """Limits for judging workers."""

    heartbeat_timeout_s: float
    stall_s: float


@dataclass(frozen=True, slots=True)
class DropWatch:
    """The broker's dropped-messages counter as last seen, and when it last rose."""

    baseline: int | None = None
    last_rise_at: datetime | None = None
    lost: int = 0  # dropped since the alert began


@dataclass(frozen=True, slots=True)
class PartitionFacts:
    """What the catalog says about readings' partitions (watchdog/database.py reads it)."""

    partitioned: bool
    ahead: int = 0  # partitions that start after now: the premade ones
    newest_upper: datetime | None = None  # where the last partition ends
    premake: int | None = None  # pg_partman's premake, when the watchdog may read its config


def judge_partitions(facts: PartitionFacts | str, *, min_ahead: int, database_down: bool) -> Result | None:
    """DOWN with fewer than `min_ahead` partitions premade, DEGRADED while maintenance is behind; None unpartitioned.

    pg_partman tops the premade partitions up to `premake` on every run, so
    between runs at most one interval's worth is missing: fewer than
    premake - 1 ahead means maintenance has not run, or failed, for a whole
    interval, days before ingestion runs out of partitions.
    """
    if isinstance(facts, str):
        return Result(PARTITIONS, Status.UNKNOWN if database_down else Status.DOWN, facts)
    if not facts.partitioned:
        return None
    last = facts.newest_upper.isoformat() if facts.newest_upper else "nowhere"
    if facts.ahead < min_ahead:
        return Result(PARTITIONS, Status.DOWN, (
            f"only {facts.ahead} partitions of readings premade ahead (WATCHDOG_MIN_PARTITIONS_AHEAD={min_ahead}); "
            f"the last ends {last}, after which readings become no_partition dead letters: is pg_partman's "
            "maintenance running? (python -m bridge partition maintain runs it by hand)"))
    if facts.premake is not None and facts.ahead < facts.premake - 1:
        return Result(PARTITIONS, Status.DEGRADED, (
            f"partition maintenance is behind: {facts.ahead} partitions of readings premade ahead, premake "
            f"{facts.premake}; it has not run, or failed, for a whole interval (PostgreSQL's log: pg_partman_bgw)"))
    premake = f" (premake {facts.premake})" if facts.premake is not None else ""
    return Result(PARTITIONS, Status.OK, f"{facts.ahead} partitions premade ahead{premake}, the last ends {last}")


def probe_result(component: str, error: str | None, *, ok_detail: str) -> Result:
    """A probe's outcome: DOWN with its error, or OK."""
    if error is None:
        return Result(component, Status.OK, ok_detail)
    return Result(component, Status.DOWN, error)


_GONE = {
    WorkerStatus.OFFLINE: "stopped cleanly (status offline)",
    WorkerStatus.CRASHED: "crashed (Last Will: it died, froze, or lost its connection without saying goodbye)",
}


def judge_worker(
    view: WorkerView, *, now: datetime, listening_s: float, database_down: bool, rules: WorkerRules,
    writes_wait: bool = False,
) -> Result:
    """A listed worker: DOWN if offline, silent or never seen; DEGRADED if it cannot store.

    Args:
        listening_s: how long the watchdog has been subscribed; a worker gets
            that long (up to the heartbeat timeout) to speak before it counts as silent.
        database_down: the database check failed; a worker that says so too
            is a consequence, not a second outage to page about.
        writes_wait: the replication check found COMMITs waiting for a missing
            synchronous standby; a worker whose COMMIT waits is that, not news.
    """
    name = view.client_id
    if view.status in _GONE:
        return Result(name, Status.DOWN, _GONE[view.status])
    age_s = (now - view.heartbeat_at).total_seconds() if view.heartbeat_at else None
    if age_s is None or age_s > rules.heartbeat_timeout_s:
        return _judge_silent(view, age_s, listening_s=listening_s, rules=rules)
    if view.malformed is not None or view.heartbeat is None:
        # Alive (it speaks), but what it says cannot be read: another version? Not a pass, not a crash.
        return Result(name, Status.DEGRADED, f"heartbeat not readable: {view.malformed or 'empty'}")
    if view.heartbeat.commit_stalled:
        return _judge_commit_wait(name, view.heartbeat, writes_wait=writes_wait)
    return _judge_heartbeat(name, view.heartbeat, age_s, now=now, database_down=database_down, rules=rules)


def _judge_commit_wait(name: str, beat: Heartbeat, *, writes_wait: bool) -> Result:
    """A COMMIT waiting longer than the worker's BRIDGE_COMMIT_WAIT_WARN_S: a synchronous standby is away."""
    detail = (f"a COMMIT has waited {beat.commit_wait_s:.0f} s for the synchronous standby, "
              f"{beat.in_flight} messages in flight and unacknowledged")
    if writes_wait:
        return Result(name, Status.OK, f"{detail} (alerted as replication)")
    return Result(name, Status.DEGRADED, detail)


def _judge_silent(view: WorkerView, age_s: float | None, *, listening_s: float, rules: WorkerRules) -> Result:
    """A worker with no fresh heartbeat: not judged yet, never seen, or silent for too long."""
    name = view.client_id
    if listening_s < rules.heartbeat_timeout_s:
        return Result(name, Status.UNKNOWN, "waiting for its first heartbeat since we subscribed")
    if age_s is None and view.status is WorkerStatus.ONLINE:
        return Result(name, Status.DOWN, f"status online but no heartbeat on {HEARTBEAT_PREFIX} (hung at start?)")
    if age_s is None:
        return Result(name, Status.DOWN, "never seen: no status or heartbeat on the broker")
    detail = f"no heartbeat for {age_s:.0f} s (limit {rules.heartbeat_timeout_s:.0f} s)"
    return Result(name, Status.DOWN, detail, confirmed=True)


def _judge_heartbeat(
    name: str, beat: Heartbeat, age_s: float, *, now: datetime, database_down: bool, rules: WorkerRules
) -> Result:
    in_flight = beat.in_flight
    # `mqtt_connected: false` is not judged: a heartbeat that reached us was sent
    # over a live connection (the bridge's first beat is queued before it connects).
    if not beat.db_ok:
        if database_down:
            return Result(name, Status.OK, f"waiting for the database, {in_flight} messages in flight")
        return Result(name, Status.DEGRADED, f"reports the database unreachable, {in_flight} messages in flight")
    # None: it never committed, so there is nothing to compare with yet.
    stalled_s = (now - beat.last_commit_at).total_seconds() if beat.last_commit_at else None
    if in_flight and stalled_s is not None and stalled_s > rules.stall_s and not database_down:
        return Result(name, Status.DEGRADED, f"{in_flight} messages in flight and no commit for {stalled_s:.0f} s")
    return Result(name, Status.OK, f"heartbeat {age_s:.1f} s ago, {in_flight} in flight")


def judge_worker_count(alive: list[str], *, min_workers: int, broker_ok: bool) -> Result:
    """Enough workers alive (online with a fresh heartbeat), listed or not."""
    if not broker_ok:
        return Result(WORKERS, Status.UNKNOWN, "broker down: cannot see the workers")
    names = ", ".join(sorted(alive)) or "none"
    if len(alive) < min_workers:
        detail = f"{len(alive)} bridge workers alive, at least {min_workers} needed ({names})"
        return Result(WORKERS, Status.DOWN, detail)
    return Result(WORKERS, Status.OK, f"{len(alive)} alive (at least {min_workers} needed): {names}")


def is_alive(view: WorkerView, *, now: datetime, rules: WorkerRules) -> bool:
    """Online (or status unknown) with a heartbeat younger than the timeout."""
    if view.status in _GONE or view.heartbeat_at is None:
        return False
    return (now - view.heartbeat_at).total_seconds() <= rules.heartbeat_timeout_s


def observe_dropped(watch: DropWatch, dropped: int | None, now: datetime) -> DropWatch:
    """Update the watch with the latest $SYS dropped counter (None: not received yet)."""
    if dropped is None:
        return watch
    if watch.baseline is None or dropped < watch.baseline:
        # First sample, or the broker restarted and its counters began again at 0.
        return replace(watch, baseline=dropped)
    if dropped > watch.baseline:
        return DropWatch(baseline=dropped, last_rise_at=now, lost=watch.lost + dropped - watch.baseline)
    return watch


def judge_data_loss(watch: DropWatch, *, now: datetime, clear_s: float) -> tuple[Result, DropWatch]:
    """DOWN while the dropped counter rose within clear_s; the counter only says *that* it rose."""
    if watch.baseline is None:
        return Result(DATA_LOSS, Status.UNKNOWN, "no $SYS/broker/publish/messages/dropped yet"), watch
    if watch.last_rise_at is not None and (now - watch.last_rise_at).total_seconds() <= clear_s:
        detail = (
            f"the broker dropped {watch.lost} messages (readings lost at the broker; "
            f"$SYS/broker/publish/messages/dropped is now {watch.baseline}): "
            "a queue limit was hit (max_queued_messages / max_queued_bytes in mosquitto.conf)"
        )
        return Result(DATA_LOSS, Status.DOWN, detail), watch
    quiet = replace(watch, last_rise_at=None, lost=0)
    return Result(DATA_LOSS, Status.OK, f"no messages dropped recently (counter {watch.baseline})"), quiet


def judge_workers(
    views: dict[str, WorkerView],
    expected: tuple[str, ...],
    *,
    now: datetime,
    listening_s: float,
    broker_ok: bool,
    database_down: bool,
    min_workers: int,
    rules: WorkerRules,
    writes_wait: bool = False,
) -> list[Result]:
    """One Result per listed worker, plus the `workers` count when WATCHDOG_MIN_WORKERS > 0."""
    results: list[Result] = []
    for name in expected:
        if not broker_ok:
            results.append(Result(name, Status.UNKNOWN, "broker down: cannot see the worker"))
            continue
        view = views.get(name, WorkerView(name))
        results.append(
            judge_worker(view, now=now, listening_s=listening_s, database_down=database_down, rules=rules,
                         writes_wait=writes_wait)
        )
    if min_workers > 0:
        alive = [name for name, view in views.items() if is_alive(view, now=now, rules=rules)]
        results.append(judge_worker_count(alive, min_workers=min_workers, broker_ok=broker_ok))
    return results


@dataclass(frozen=True, slots=True)
class LinkView:
    """What a site bridge's retained link-state topic on the central broker says."""

    state: LinkState | None  # None: a payload that is no state
    payload: bytes
    since: datetime  # when the watchdog saw it change to this (or first saw it)


def site_bridge_component(name: str) -> str:
    """The component an alert about site bridge `name` names."""
    return f"{SITE_BRIDGE_PREFIX}{name}"


def judge_site_bridge(name: str, view: LinkView | None, *, now: datetime) -> Result:
    """DOWN while the bridge's link is down (its Will says 0) or was never up since the broker started."""
    component = site_bridge_component(name)
    if view is None:
        return Result(component, Status.DOWN, (
            "no link state from this site on the central broker: its bridge has not connected since the broker "
            "started (check the site broker, its address, remote_clientid and site-bridge account)"
        ))
    if view.state is LinkState.UP:
        return Result(component, Status.OK, "connected to the central broker")
    if view.state is LinkState.DOWN:
        for_s = (now - view.since).total_seconds()
        return Result(component, Status.DOWN, (
            f"link to the central broker down for {for_s:.0f} s (bridge state 0): the site queues its readings "
            "until it is back, up to its max_queued_messages"
        ))
    return Result(component, Status.DEGRADED, f"unreadable link state {view.payload[:40]!r}")


def judge_site_bridges(
    links: dict[str, LinkView], expected: tuple[str, ...], *, now: datetime, broker_ok: bool,
) -> list[Result]:
    """One Result per site bridge in WATCHDOG_SITE_BRIDGES; UNKNOWN while the central broker is down."""
    if not broker_ok:
        return [
            Result(site_bridge_component(name), Status.UNKNOWN, "broker down: cannot see the site's link")
            for name in expected
        ]
    return [judge_site_bridge(name, links.get(name), now=now) for name in expected]
