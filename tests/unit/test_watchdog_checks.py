"""Pure judgements of workers, the worker count and the broker's dropped-messages counter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fakes import heartbeat

from iotcommon.contract import Heartbeat, LinkState, WorkerStatus
from watchdog.checks import (
    PARTITIONS,
    DropWatch,
    LinkView,
    PartitionFacts,
    Status,
    WorkerRules,
    WorkerView,
    judge_data_loss,
    judge_partitions,
    judge_site_bridges,
    judge_worker,
    judge_workers,
    observe_dropped,
    probe_result,
)

ONLINE, OFFLINE, CRASHED = WorkerStatus.ONLINE, WorkerStatus.OFFLINE, WorkerStatus.CRASHED

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
RULES = WorkerRules(heartbeat_timeout_s=15, stall_s=60)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def beat(**fields: Any) -> Heartbeat:
    return heartbeat(at=NOW, **fields)


def judge(view: WorkerView, *, listening_s: float = 600, database_down: bool = False) -> tuple[Status, str]:
    result = judge_worker(view, now=NOW, listening_s=listening_s, database_down=database_down, rules=RULES)
    assert result.component == view.client_id
    return result.status, result.detail


def test_fresh_heartbeat_is_ok() -> None:
    status, detail = judge(WorkerView("bridge-1", ONLINE, beat(), ago(3)))

    assert status is Status.OK
    assert "heartbeat 3.0 s ago" in detail


def test_offline_status_is_down_whatever_the_heartbeat_and_says_it_stopped_cleanly() -> None:
    status, detail = judge(WorkerView("bridge-1", OFFLINE, beat(), ago(1)))

    assert status is Status.DOWN
    assert detail == "stopped cleanly (status offline)"


def test_last_will_says_crashed_not_stopped() -> None:
    status, detail = judge(WorkerView("bridge-1", CRASHED, beat(), ago(1)))

    assert status is Status.DOWN
    assert detail.startswith("crashed (Last Will")


def test_a_malformed_heartbeat_is_reported_as_such_not_passed_and_not_a_crash() -> None:
    view = WorkerView("bridge-1", ONLINE, None, ago(1), malformed="in_flight: Input should be a valid integer")

    assert judge(view) == (Status.DEGRADED, "heartbeat not readable: in_flight: Input should be a valid integer")


def test_stale_heartbeat_is_down() -> None:
    status, detail = judge(WorkerView("bridge-1", ONLINE, beat(), ago(16)))

    assert status is Status.DOWN
    assert "no heartbeat for 16 s (limit 15 s)" in detail
    confirmed = judge_worker(WorkerView("bridge-1", ONLINE, beat(), ago(16)), now=NOW, listening_s=600,
                             database_down=False, rules=RULES).confirmed
    assert confirmed, "the timeout already waited: no threshold on top"
    assert not judge_worker(WorkerView("bridge-1", OFFLINE), now=NOW, listening_s=600, database_down=False,
                            rules=RULES).confirmed, "offline can be a restart in progress: it waits the threshold"


def test_never_seen_is_down_but_only_after_listening_a_heartbeat_timeout() -> None:
    assert judge(WorkerView("bridge-9"), listening_s=5)[0] is Status.UNKNOWN
    assert judge(WorkerView("bridge-9"), listening_s=15.1) == (
        Status.DOWN, "never seen: no status or heartbeat on the broker"
    )


def test_stale_retained_heartbeat_after_a_reconnect_gets_a_grace_period() -> None:
    view = WorkerView("bridge-1", ONLINE, beat(), ago(600))

    assert judge(view, listening_s=2)[0] is Status.UNKNOWN
    assert judge(view, listening_s=20)[0] is Status.DOWN


def test_database_unreachable_is_degraded_unless_the_database_check_already_fails() -> None:
    view = WorkerView("bridge-1", ONLINE, beat(db_ok=False, in_flight=120), ago(1))

    assert judge(view) == (Status.DEGRADED, "reports the database unreachable, 120 messages in flight")
    assert judge(view, database_down=True)[0] is Status.OK, "one alert for the database, not one per worker"


def test_a_commit_waiting_for_the_standby_is_degraded_unless_replication_already_says_writes_wait() -> None:
    view = WorkerView("bridge-1", ONLINE, beat(commit_stalled=True, commit_wait_s=7.4, in_flight=90), ago(1))

    assert judge(view) == (Status.DEGRADED, "a COMMIT has waited 7 s for the synchronous standby, "
                                            "90 messages in flight and unacknowledged")
    waiting = judge_worker(view, now=NOW, listening_s=600, database_down=False, rules=RULES, writes_wait=True)
    assert waiting.status is Status.OK, "one alert, as replication, not one per worker"
    assert waiting.detail.endswith("(alerted as replication)")


def test_in_flight_without_commit_for_stall_s_is_degraded() -> None:
    stalled = WorkerView("bridge-1", ONLINE, beat(in_flight=40, last_commit_at=ago(61)), ago(1))
    busy = WorkerView("bridge-1", ONLINE, beat(in_flight=40, last_commit_at=ago(2)), ago(1))
    idle = WorkerView("bridge-1", ONLINE, beat(in_flight=0, last_commit_at=ago(3600)), ago(1))

    assert judge(stalled) == (Status.DEGRADED, "40 messages in flight and no commit for 61 s")
    assert judge(busy)[0] is Status.OK
    assert judge(idle)[0] is Status.OK, "a quiet worker with nothing to store is fine"


def test_mqtt_connected_false_is_stale_news_once_the_heartbeat_arrived() -> None:
    # The bridge queues its first heartbeat before it connects; it arrives saying false.
    assert judge(WorkerView("bridge-1", ONLINE, beat(mqtt_connected=False), ago(1)))[0] is Status.OK


def test_workers_are_unknown_while_the_broker_is_down() -> None:
    results = judge_workers(
        {}, ("bridge-1",), now=NOW, listening_s=600, broker_ok=False, database_down=False, min_workers=1, rules=RULES
    )

    assert [(r.component, r.status) for r in results] == [("bridge-1", Status.UNKNOWN), ("workers", Status.UNKNOWN)]


def test_worker_count_counts_fresh_online_workers_listed_or_not() -> None:
    views = {
        "a": WorkerView("a", ONLINE, beat(), ago(1)),
        "b": WorkerView("b", None, beat(), ago(2)),
        "gone": WorkerView("gone", OFFLINE, beat(), ago(1)),
        "old": WorkerView("old", ONLINE, beat(), ago(900)),
    }

    def count(min_workers: int) -> tuple[Status, str]:
        results = judge_workers(views, (), now=NOW, listening_s=600, broker_ok=True, database_down=False,
                                min_workers=min_workers, rules=RULES)
        return results[-1].status, results[-1].detail

    assert count(2) == (Status.OK, "2 alive (at least 2 needed): a, b")
    assert count(3) == (Status.DOWN, "2 bridge workers alive, at least 3 needed (a, b)")
    assert judge_workers(views, (), now=NOW, listening_s=600, broker_ok=True, database_down=False,
                         min_workers=0, rules=RULES) == [], "no count check when WATCHDOG_MIN_WORKERS=0"


def test_probe_result() -> None:
    assert probe_result("database", None, ok_detail="SELECT 1 in 2 ms").status is Status.OK
    failed = probe_result("database", "connection refused", ok_detail="unused")
    assert (failed.status, failed.detail) == (Status.DOWN, "connection refused")


def test_dropped_counter_rising_is_data_loss_until_quiet_for_clear_s() -> None:
    watch = observe_dropped(DropWatch(), 7, ago(100))
    result, watch = judge_data_loss(watch, now=ago(100), clear_s=60)
    assert result.status is Status.OK, "a first sample is only a baseline"

    watch = observe_dropped(watch, 10, ago(90))
    watch = observe_dropped(watch, 12, ago(80))
    result, watch = judge_data_loss(watch, now=ago(80), clear_s=60)
    assert result.status is Status.DOWN
    assert "dropped 5 messages" in result.detail

    result, watch = judge_data_loss(observe_dropped(watch, 12, ago(30)), now=ago(30), clear_s=60)
    assert result.status is Status.DOWN, "still within clear_s of the last rise"
    result, watch = judge_data_loss(observe_dropped(watch, 12, NOW), now=NOW, clear_s=60)
    assert result.status is Status.OK
    assert watch.lost == 0


def test_dropped_counter_reset_by_a_broker_restart_is_not_data_loss() -> None:
    watch = observe_dropped(observe_dropped(DropWatch(), 50, ago(20)), 0, ago(10))
    result, _ = judge_data_loss(watch, now=NOW, clear_s=60)

    assert result.status is Status.OK
    assert watch.baseline == 0


def test_no_dropped_counter_yet_is_unknown() -> None:
    result, _ = judge_data_loss(observe_dropped(DropWatch(), None, NOW), now=NOW, clear_s=60)

    assert result.status is Status.UNKNOWN


def link(state: LinkState | None, since_s: float = 30, payload: bytes | None = None) -> LinkView:
    return LinkView(state, payload if payload is not None else (state or "?").encode(), ago(since_s))


def test_site_bridges_up_down_never_seen_and_unreadable() -> None:
    links = {"site-1": link(LinkState.UP), "site-2": link(LinkState.DOWN, 42), "site-4": link(None, payload=b"x")}

    results = judge_site_bridges(links, ("site-1", "site-2", "site-3", "site-4"), now=NOW, broker_ok=True)

    assert [(r.component, r.status) for r in results] == [
        ("site-bridge:site-1", Status.OK), ("site-bridge:site-2", Status.DOWN),
        ("site-bridge:site-3", Status.DOWN), ("site-bridge:site-4", Status.DEGRADED),
    ]
    assert "down for 42 s" in results[1].detail and "max_queued_messages" in results[1].detail
    assert "has not connected since the broker started" in results[2].detail
    assert not any(r.confirmed for r in results), "a link that flaps once is not worth a page: the threshold applies"


def test_site_bridges_are_unknown_while_the_broker_is_down_and_only_listed_ones_are_judged() -> None:
    links = {"site-1": link(LinkState.DOWN), "elsewhere": link(LinkState.DOWN)}

    assert [r.status for r in judge_site_bridges(links, ("site-1",), now=NOW, broker_ok=False)] == [Status.UNKNOWN]
    assert [r.component for r in judge_site_bridges(links, ("site-1",), now=NOW, broker_ok=True)] == [
        "site-bridge:site-1"
    ]


# --- partitions of readings ------------------------------------------------------------------

LAST = datetime(2026, 12, 12, tzinfo=UTC)


def partitions(ahead: int, premake: int | None = 7) -> PartitionFacts:
    return PartitionFacts(partitioned=True, ahead=ahead, newest_upper=LAST, premake=premake)


def test_a_plain_readings_table_gives_no_partitions_result() -> None:
    assert judge_partitions(PartitionFacts(partitioned=False), min_ahead=2, database_down=False) is None


def test_premake_or_one_less_between_maintenance_runs_is_ok() -> None:
    for ahead in (8, 7, 6):
        result = judge_partitions(partitions(ahead), min_ahead=2, database_down=False)
        assert result is not None and result.status is Status.OK, ahead
    assert result is not None
    assert "6 partitions premade ahead (premake 7), the last ends 2026-12-12" in result.detail


def test_a_whole_interval_without_maintenance_is_degraded_before_it_bites() -> None:
    result = judge_partitions(partitions(5), min_ahead=2, database_down=False)

    assert result is not None and result.component == PARTITIONS
    assert result.status is Status.DEGRADED
    assert "maintenance is behind: 5 partitions" in result.detail and "pg_partman_bgw" in result.detail


def test_fewer_premade_than_the_threshold_is_down_naming_the_setting_and_the_fix() -> None:
    result = judge_partitions(partitions(1), min_ahead=2, database_down=False)

    assert result is not None and result.status is Status.DOWN
    assert "only 1 partitions" in result.detail and "WATCHDOG_MIN_PARTITIONS_AHEAD=2" in result.detail
    assert "python -m bridge partition maintain" in result.detail
    assert judge_partitions(partitions(0, premake=None), min_ahead=0, database_down=False).status is Status.OK  # type: ignore[union-attr]


def test_without_pg_partmans_config_only_the_threshold_applies() -> None:
    assert judge_partitions(partitions(3, premake=None), min_ahead=2, database_down=False).status is Status.OK  # type: ignore[union-attr]


def test_an_unreadable_catalog_is_down_unless_the_database_is() -> None:
    down = judge_partitions("cannot read the partitions of readings: boom", min_ahead=2, database_down=False)
    unknown = judge_partitions("database down", min_ahead=2, database_down=True)

    assert down is not None and down.status is Status.DOWN and "boom" in down.detail
    assert unknown is not None and unknown.status is Status.UNKNOWN
