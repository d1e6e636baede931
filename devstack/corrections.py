"""Known correction traffic (BRIDGE_ON_CONFLICT=update): several revisions of each key, and where each version went.

Every version sent must end up exactly one of: the key's current row, a row of
reading_revisions (it was current, then replaced), or a `stale_revision` dead
letter (it arrived after a higher revision). outcome() reads the three, and
assert_resolved() checks that.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from devstack.processes import wait_until
from iotcommon.contract import reading_topic

BASE_AT = datetime(2026, 3, 1, tzinfo=UTC)
Key = tuple[int, datetime, str]
Version = tuple[float, str, int]  # value, unit, revision


@dataclass
class Corrections:
    """Messages to publish, in order, and every distinct version of each key among them."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    versions: dict[Key, set[Version]] = field(default_factory=lambda: defaultdict(set))
    sends: Counter[tuple[Key, Version]] = field(default_factory=Counter)  # how often each version is published



def payload(key: Key, version: Version) -> tuple[str, bytes]:
    """The topic and JSON payload of one version of a reading."""
    (sensor_id, at, variable), (value, unit, revision) = key, version
    body = {"sensor_id": sensor_id, "timestamp": at.isoformat(), "variable": variable, "value": value, "unit": unit,
            "revision": revision}
    return reading_topic(sensor_id), json.dumps(body).encode()


def build(keys: int, revisions: int, *, duplicate_share: float = 0.0, seed: int = 11) -> Corrections:
    """`revisions` versions (revision 0, 1, ...) of each of `keys` readings, exact re-sends of some, all shuffled."""
    rng = random.Random(seed)
    sent = Corrections()
    for k in range(keys):
        key = (k % 10 + 1, BASE_AT + timedelta(seconds=k), "temperature")
        for revision in range(revisions):
            version = (round(k + revision / 10, 2), "°C", revision)
            sent.versions[key].add(version)
            sent.sends[(key, version)] += 1
            sent.messages.append(payload(key, version))
    for _ in range(round(len(sent.messages) * duplicate_share)):
        key = rng.choice(list(sent.versions))
        version = rng.choice(sorted(sent.versions[key]))
        sent.sends[(key, version)] += 1
        sent.messages.append(payload(key, version))
    rng.shuffle(sent.messages)
    return sent


@dataclass
class Outcome:
    """Where the versions went: the current rows, the replaced versions, the stale and conflicting dead letters."""

    current: dict[Key, Version]
    replaced: dict[Key, list[Version]]
    replaced_by: Counter[str]
    stale: dict[Key, list[Version]]
    other_rejections: list[tuple[str, str]]  # (code, reason) of every other dead letter


def outcome(admin_url: str) -> Outcome:
    """Read readings, reading_revisions and rejected_messages."""
    with psycopg.connect(admin_url) as conn:
        current = conn.execute(
            'SELECT sensor_id, "timestamp", variable, value, unit, revision FROM readings'
        ).fetchall()
        replaced = conn.execute(
            'SELECT sensor_id, "timestamp", variable, value, unit, revision, replaced_by FROM reading_revisions '
            "ORDER BY id"
        ).fetchall()
        rejected = conn.execute("SELECT reason_code, payload, reason FROM rejected_messages ORDER BY id").fetchall()
    result = Outcome({(s, t, v): (x, u, r) for s, t, v, x, u, r in current}, defaultdict(list), Counter(),
                     defaultdict(list), [])
    for sensor_id, at, variable, value, unit, revision, by in replaced:
        result.replaced[(sensor_id, at, variable)].append((value, unit, revision))
        result.replaced_by[by] += 1
    for code, raw, reason in rejected:
        if code != "stale_revision":
            result.other_rejections.append((code, reason))
            continue
        body = json.loads(bytes(raw))
        key = (body["sensor_id"], datetime.fromisoformat(body["timestamp"]), body["variable"])
        result.stale[key].append((body["value"], body["unit"], body["revision"]))
    return result


def wait_until_resolved(admin_url: str, sent: Corrections, *, timeout: float = 90) -> Outcome:
    """Poll until every version sent is current, replaced or stale; return the outcome."""

    def settled() -> Outcome | None:
        seen = outcome(admin_url)
        for key, versions in sent.versions.items():
            current = seen.current.get(key)
            if current is None or not versions <= {current, *seen.replaced.get(key, ()), *seen.stale.get(key, ())}:
                return None
        return seen

    return wait_until(settled, timeout, interval=0.2, message="every version current, replaced or stale")


def assert_resolved(seen: Outcome, sent: Corrections, *, redelivered: bool = False) -> None:
    """The highest revision is current; every other version is replaced once, or stale.

    A stale version is dead-lettered each time it arrives: once if it was
    published once. With `redelivered` (a worker was killed after a commit,
    before its acks) it may be stored again, as any dead letter may
    (at-least-once); a replaced version never is (reading_revisions is unique
    by key and revision).
    """
    assert seen.other_rejections == [], "no conflicts, nothing invalid"
    assert set(seen.current) == set(sent.versions)
    for key, versions in sent.versions.items():
        highest = max(versions, key=lambda version: version[2])
        assert seen.current[key] == highest, f"{key}: the highest revision is current"
        replaced, stale = seen.replaced.get(key, []), seen.stale.get(key, [])
        assert len(set(replaced)) == len(replaced), f"{key}: a version recorded as replaced twice"
        if not redelivered:
            for version in set(stale):
                assert stale.count(version) <= sent.sends[(key, version)], f"{key}: {version} dead-lettered twice"
        assert not set(replaced) & set(stale), f"{key}: a version both replaced and stale"
        assert set(replaced) | set(stale) | {highest} == versions, f"{key}: every version accounted for"
        revisions = [revision for *_, revision in replaced]
        assert revisions == sorted(revisions), f"{key}: replaced in rising revision order"
