"""BRIDGE_ON_CONFLICT=update: a higher revision replaces a stored reading, whose version goes to reading_revisions.

Race-free by row locks, in the batch's one transaction:

1. INSERT the first version of each key ... ON CONFLICT DO NOTHING, in key
   order (as keep mode does). A key another worker is inserting at the same
   moment waits for that worker's commit, so afterwards every key of the batch
   is either ours or committed by someone else.
2. Only when the batch holds a key already stored, or several versions of one
   key: SELECT the stored rows FOR UPDATE, in key order. In READ COMMITTED a
   row locked after a wait is read in its newest committed version, and the lock
   holds until our COMMIT: no other worker can change the version we judge
   against, and theirs is judged against ours after we commit. Two workers lock
   keys in the same order, so they do not deadlock (PostgreSQL would detect one
   and the batch would be retried).
3. bridge/store/revisions.py judges each key's versions in arrival order; we append
   the replaced versions to reading_revisions, UPDATE the rows to their final
   version, and dead-letter conflicts and stale revisions.

A batch of new keys, one version each (the common case), costs what keep mode
costs: step 1 only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from bridge.errors import SinkUnavailable
from bridge.store.revisions import STORED_BEFORE, Resolution, Verdict, Version, resolve
from bridge.store.staging import Staged, WriteResult, describe_stored
from iotcommon.contract import RejectionCode

Key = tuple[int, datetime, str]

_INSERT_FIRST = """
INSERT INTO readings (sensor_id, "timestamp", variable, value, unit, revision)
SELECT DISTINCT ON (sensor_id, "timestamp", variable) sensor_id, "timestamp", variable, value, unit, revision
FROM bridge_staging ORDER BY sensor_id, "timestamp", variable, seq
ON CONFLICT DO NOTHING
RETURNING sensor_id, "timestamp", variable
"""
# ORDER BY sits below the row locking: rows are locked in key order.
_LOCK_STORED = """
SELECT s.seq, r.value, r.unit, r.revision, r.ingested_at
FROM bridge_staging s JOIN readings r USING (sensor_id, "timestamp", variable)
WHERE s.seq = ANY(%s)
ORDER BY r.sensor_id, r."timestamp", r.variable
FOR UPDATE OF r
"""
_HISTORY = """
SELECT s.seq, h.value, h.unit, h.revision
FROM bridge_staging s JOIN reading_revisions h USING (sensor_id, "timestamp", variable)
WHERE s.seq = ANY(%s)
"""
# A version stored by this very batch was ingested now(), like every row of it.
_RECORD_REPLACED = """
INSERT INTO reading_revisions (sensor_id, "timestamp", variable, value, unit, revision, ingested_at, replaced_by)
SELECT s.sensor_id, s."timestamp", s.variable, v.value, v.unit, v.revision, coalesce(v.ingested_at, now()), %s
FROM unnest(%s::integer[], %s::double precision[], %s::text[], %s::integer[], %s::timestamptz[])
     WITH ORDINALITY AS v(seq, value, unit, revision, ingested_at, position)
JOIN bridge_staging s USING (seq)
ORDER BY v.position
"""
_REPLACE = """
UPDATE readings r SET value = v.value, unit = v.unit, revision = v.revision, ingested_at = now()
FROM unnest(%s::integer[], %s::double precision[], %s::text[], %s::integer[]) AS v(seq, value, unit, revision)
JOIN bridge_staging s USING (seq)
WHERE r.sensor_id = s.sensor_id AND r."timestamp" = s."timestamp" AND r.variable = s.variable
"""


@dataclass(slots=True)
class _Changes:
    """What the resolutions of a batch's keys ask of the database, keyed by a staged row's seq."""

    replaced: list[tuple[int, float, str, int, datetime | None]] = field(default_factory=list)
    final: list[tuple[int, float, str, int]] = field(default_factory=list)


def write_corrections(cur: psycopg.Cursor[Any], staged: Staged) -> WriteResult:
    """Store the batch's readings (in the staging table already) in update mode; dead letters go to `staged`."""
    result = WriteResult()
    cur.execute(_INSERT_FIRST)
    inserted = {(int(s), t, str(v)) for s, t, v in cur.fetchall()}
    result.stored = len(inserted)
    if result.stored == len(staged.rows):
        return result  # every reading a new key: nothing to judge
    keys: dict[Key, list[int]] = defaultdict(list)
    for seq, sensor_id, timestamp, variable, *_ in staged.rows:
        keys[(sensor_id, timestamp, variable)].append(seq)
    judged = {key: seqs for key, seqs in keys.items() if key not in inserted or len(seqs) > 1}
    stored = _lock_stored(cur, [seqs[0] for key, seqs in judged.items() if key not in inserted])
    history = _history(cur, staged, judged, stored)
    changes = _Changes()
    for seqs in judged.values():
        current = stored.get(seqs[0])
        arrivals = [_version(staged, seq) for seq in seqs]
        resolution = resolve(current[0] if current else None, history.get(seqs[0], ()), arrivals)
        _apply(staged, seqs, arrivals=arrivals, resolution=resolution, stored=current, changes=changes, result=result)
    _write_changes(cur, staged.client_id, changes)
    return result


def _lock_stored(cur: psycopg.Cursor[Any], seqs: list[int]) -> dict[int, tuple[Version, datetime]]:
    """The stored version (and ingested_at) of the key of each staged row `seqs`, locked until COMMIT."""
    if not seqs:
        return {}
    cur.execute(_LOCK_STORED, (seqs,))
    stored = {int(seq): (Version(value, unit, revision), ingested_at)
              for seq, value, unit, revision, ingested_at in cur.fetchall()}
    if len(stored) < len(seqs):
        # Rows are never deleted by the bridge: someone removed one since step 1.
        raise SinkUnavailable("a stored reading disappeared while its batch was written; writing the batch again")
    return stored


def _history(
    cur: psycopg.Cursor[Any], staged: Staged, judged: dict[Key, list[int]], stored: dict[int, tuple[Version, datetime]]
) -> dict[int, list[Version]]:
    """The versions replaced before, for the keys where an arrival has a lower revision than the stored one.

    Only those can be a re-delivered older version; every replaced revision is
    lower than the stored one.
    """
    wanted = [
        seqs[0] for seqs in judged.values()
        if seqs[0] in stored and any(staged.rows[seq][6] < stored[seqs[0]][0].revision for seq in seqs)
    ]
    if not wanted:
        return {}
    cur.execute(_HISTORY, (wanted,))
    history: dict[int, list[Version]] = defaultdict(list)
    for seq, value, unit, revision in cur.fetchall():
        history[int(seq)].append(Version(value, unit, revision))
    return history


def _version(staged: Staged, seq: int) -> Version:
    _, _, _, _, value, unit, revision = staged.rows[seq]
    return Version(value, unit, revision)


def _apply(
    staged: Staged, seqs: list[int], *, arrivals: list[Version], resolution: Resolution,
    stored: tuple[Version, datetime] | None, changes: _Changes, result: WriteResult,
) -> None:
    """Count the verdicts on one key, dead-letter the refused versions, note the replaced ones and the final one."""
    for seq, verdict, against in zip(seqs, resolution.verdicts, resolution.against, strict=True):
        if verdict is Verdict.DUPLICATE:
            result.duplicates += 1
        elif verdict is Verdict.REVISED:
            result.revised += 1
        elif verdict in (Verdict.CONFLICT, Verdict.STALE) and against is not None:
            words = describe_stored(staged.origins[seq][2], value=against.value, unit=against.unit,
                                    revision=against.revision)
            if verdict is Verdict.CONFLICT:
                staged.dead_letter(seq, RejectionCode.CONFLICT, f"conflict: {words}. The stored reading was kept")
                result.conflicts += 1
            else:
                staged.dead_letter(seq, RejectionCode.STALE_REVISION,
                                   f"stale revision: {words}, a lower revision. The stored reading was kept")
                result.stale += 1
    for index in resolution.replaced:
        if index == STORED_BEFORE and stored is not None:
            changes.replaced.append((seqs[0], *stored[0], stored[1]))
        else:
            changes.replaced.append((seqs[0], *arrivals[index], None))
    # The row holds the stored version, or the first arrival if step 1 inserted it.
    holds = STORED_BEFORE if stored is not None else 0
    if resolution.final != holds:
        changes.final.append((seqs[0], *arrivals[resolution.final]))


def _write_changes(cur: psycopg.Cursor[Any], client_id: str, changes: _Changes) -> None:
    """Append the replaced versions, then move each changed key to its final version."""
    if changes.replaced:
        cur.execute(_RECORD_REPLACED, (client_id, *(list(column) for column in zip(*changes.replaced, strict=True))))
    if changes.final:
        cur.execute(_REPLACE, [list(column) for column in zip(*changes.final, strict=True)])
