"""Corrections (BRIDGE_ON_CONFLICT=update): what each version of one key becomes. Pure, no I/O.

The sink locks the key's stored row, reads it and the versions it replaced
before, and calls resolve() with the batch's versions of that key in arrival
order. The rule, the same within a batch as across batches (README, "Corrections"):

- no stored version: the first one is stored;
- identical (value, unit, revision) to the current version or to one it
  replaced: a duplicate, nothing changes (so a redelivery is harmless);
- a higher revision than the current: it becomes current, and the current one
  is recorded in reading_revisions;
- the same revision, different value or unit: a conflict (dead letter);
- a lower revision: stale (dead letter), it never was current.

So the highest revision ends current whatever the order, and every version
received is current, recorded as replaced, a duplicate of one of those, or a
dead letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class OnConflict(StrEnum):
    """BRIDGE_ON_CONFLICT: what a different copy of a stored key does."""

    KEEP = "keep"  # the stored reading is kept; the newcomer is a `conflict` dead letter
    UPDATE = "update"  # a higher revision replaces it (this module)


class Version(NamedTuple):
    """What may differ between two readings of one key."""

    value: float
    unit: str
    revision: int


class Verdict(StrEnum):
    """What one received version of a key became."""

    STORED = "stored"  # the key's first version
    REVISED = "revised"  # replaced the current version
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    STALE = "stale"


STORED_BEFORE = -1  # in Resolution.replaced and .final: the version stored before the batch


@dataclass(slots=True)
class Resolution:
    """The verdict on each arrival of one key, and what changed.

    `against[i]` is the version arrival i was judged against (None if there was
    none); `replaced` lists, in order, the versions that stopped being current
    (STORED_BEFORE or an arrival's index); `final` is the current one at the end.
    """

    verdicts: list[Verdict] = field(default_factory=list)
    against: list[Version | None] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    final: int = STORED_BEFORE


def resolve(current: Version | None, history: Iterable[Version], arrivals: Sequence[Version]) -> Resolution:
    """Judge the arrivals of one key in order against its current version and the versions it replaced."""
    result = Resolution()
    known = set(history)
    if current is not None:
        known.add(current)
    for index, arrival in enumerate(arrivals):
        result.against.append(current)
        if current is None:
            verdict = Verdict.STORED
        elif arrival in known:
            verdict = Verdict.DUPLICATE
        elif arrival.revision > current.revision:
            verdict = Verdict.REVISED
            result.replaced.append(result.final)
        elif arrival.revision == current.revision:
            verdict = Verdict.CONFLICT
        else:
            verdict = Verdict.STALE
        if verdict in (Verdict.STORED, Verdict.REVISED):
            current, result.final = arrival, index
            known.add(arrival)
        result.verdicts.append(verdict)
    return result
